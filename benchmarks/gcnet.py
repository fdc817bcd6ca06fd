"""What GCNet's context blocks add to a ResNet backbone: weights, FLOPs, time.

R50 and R101 with `r4_gcb_c3-c5` (the GC-Net rows of Table V) against
Model Garden's plain ResNet of the same depth, forward on one
`--image_size` image (the paper's detectors see 1024 px here). `gc_flop_share`
is the context blocks' part of the GC backbone's FLOPs (ops under their
name). `ratio` is the GC backbone's median time over the plain one's, timed
in the same rounds. float32, no XLA.
"""

import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import resnet

from benchmarks import flops
from groie_tf.modeling import gc_resnet


def _forward_graph(backbone, image):
  return tf.function(backbone).get_concrete_function(image).graph


def run(setup, precision):
  if precision != 'float32':
    return []
  size = setup.image_size
  spec = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
  image = tf.random.stateless_uniform([1, size, size, 3], [0, 0])
  rows = []
  for depth in (50, 101):
    models = {'Model Garden ResNet': resnet.ResNet(model_id=depth,
                                                  input_specs=spec),
              'GC ResNet (r4, c3-c5)': gc_resnet.GCResNet(model_id=depth,
                                                          input_specs=spec)}
    plain, gc = models
    graphs = {name: _forward_graph(model, image)
              for name, model in models.items()}
    counts = {name: flops.graph_flops(graph) for name, graph in graphs.items()}
    gc_flops = flops.graph_flops(graphs[gc], ['context_block'])
    with tf.device(setup.device):
      timed = setup.time({name: tf.function(lambda m=model: m(image))
                          for name, model in models.items()})
    for name, model in models.items():
      rows.append({
          'section': 'gcnet', 'case': f'R{depth} forward, 1 x {size}px',
          'variant': name, 'precision': precision, 'xla': False,
          'weights': model.count_params(),
          'added_weights': model.count_params() -
                           models[plain].count_params(),
          'gflop': counts[name] / 1e9,
          'gc_flop_share': gc_flops / counts[name] if name == gc else 0.0,
          'median_ms': 1e3 * timed[name],
          'ratio': timed[name] / timed[plain],
      })
  return rows
