"""The GRoIE layer against the stock aligner, and its conv ceiling.

The paper's GRoIE (shared 5x5 conv + ReLU, sum, GeneralizedAttention) spends
nearly all its FLOPs in the pre-processing conv, run once over the RoIs of
all four levels: `[4 K, 7, 7, C]`. One plain 5x5 conv + ReLU of exactly that
size, timed in the same rounds, is the FLOP rate this device reaches on
GRoIE's arithmetic; GRoIE's efficiency is its own FLOP rate over that one.
"""

import functools
import itertools

import tensorflow as tf
import tf_keras
from official.vision.modeling.layers import roi_aligner

from benchmarks import flops
from benchmarks import inputs
from benchmarks import timing
from groie_tf.layers import GRoIE

CROP_SIZE = 7


def _forward(layer, *args):
  return layer(*args)


def forward_and_backward(layer, *args):
  """Gradients of the output's sum w.r.t. the first input and the weights."""
  with tf.GradientTape() as tape:
    tape.watch(args[0])
    loss = tf.reduce_sum(tf.cast(layer(*args), tf.float32))
  return tape.gradient(loss, [args[0], layer.trainable_weights])


def run(setup, precision):
  dtype = setup.compute_dtype(precision)
  features = inputs.fpn_features(setup.batch_size, setup.image_size,
                                 setup.channels, dtype)
  boxes = inputs.rois(setup.batch_size, setup.layer_rois, setup.image_size)
  num_rois = 4 * setup.batch_size * setup.layer_rois
  conv_input = tf.cast(tf.random.stateless_normal(
      [num_rois, CROP_SIZE, CROP_SIZE, setup.channels], [0, 0]), dtype)
  layers = {
      'stock aligner': (roi_aligner.MultilevelROIAligner(CROP_SIZE),
                        (features, boxes)),
      'GRoIE (paper)': (GRoIE(crop_size=CROP_SIZE), (features, boxes)),
      'plain 5x5 conv, [4K,7,7,C]': (tf_keras.layers.Conv2D(
          setup.channels, 5, padding='same', activation='relu'),
                                     (conv_input,)),
  }
  for layer, args in layers.values():
    layer(*args)  # builds the weights outside any tf.function
  rows = []
  case = (f'box: {setup.batch_size}x{setup.layer_rois} RoIs, '
          f'{CROP_SIZE}x{CROP_SIZE}, C={setup.channels}')
  modes = (('forward', _forward), ('forward+backward', forward_and_backward))
  for xla, (mode, body) in itertools.product(setup.xla, modes):
    skipped = body is forward_and_backward and setup.why_not_backward(
        precision)
    if skipped:
      rows += [{'section': 'layer', 'case': f'{case}, {mode}', 'variant': name,
                'precision': precision, 'xla': xla, 'skipped': skipped}
               for name in layers]
      continue
    functions = {
        name: tf.function(functools.partial(body, layer, *args),
                          jit_compile=xla)
        for name, (layer, args) in layers.items()}
    timed = setup.time(functions)
    counts = {name: flops.graph_flops(
        functions[name].get_concrete_function().graph) for name in layers}
    rates = {name: counts[name] / timed[name] for name in layers}
    ceiling = rates['plain 5x5 conv, [4K,7,7,C]']
    baseline = timed['stock aligner']
    for name in layers:
      rows.append({
          'section': 'layer', 'case': f'{case}, {mode}', 'variant': name,
          'precision': precision, 'xla': xla,
          'median_ms': 1e3 * timed[name], 'ratio': timed[name] / baseline,
          'gflop': counts[name] / 1e9,
          'gflop_per_s': rates[name] / 1e9,
          'of_conv_ceiling': rates[name] / ceiling,
          'peak_mb': timing.megabytes(timing.peak_bytes(functions[name],
                                                  setup.device)),
      })
  return rows
