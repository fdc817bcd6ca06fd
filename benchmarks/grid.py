"""What Grid R-CNN's grid branch costs per RoI, with either extractor.

The branch pools 14x14 features for each RoI (Model Garden's stock aligner,
or the paper's GRoIE at crop 14) and runs the `GridHead` (mmdetection's:
8 convs with GroupNorm(36), 64 channels per point). Rows: each extractor
followed by the head, and the head alone. `gmac_per_roi` is the graph's
multiply-adds over the RoIs (FLOPs / 2; forward+backward counts the
gradients too). Training runs the head's fused and unfused outputs;
inference only the fused. `ratio` is over the stock branch, timed in the
same rounds.

A second case times how training pools its picks (up to 192 positives
drawn from all images of a replica; here the first case's RoI count, spread
over 2 and over 8 images; forward+backward through GRoIE alone):
flat, with the image of each pick (`box_indices`, what the model does),
against the per-image `[B, K, 4]` table Model Garden's aligners take (what
the model did before), in which the modules also process the B - 1 rows of
zero boxes per pick. `ratio` is over the flat call.
"""

import functools
import itertools

import tensorflow as tf
from official.vision.modeling.layers import roi_aligner

from benchmarks import flops
from benchmarks import inputs
from groie_tf.layers import GRoIE
from groie_tf.layers import GridHead
from groie_tf.modeling import grid_rcnn_model

CROP_SIZE = 14


def _branch(aligner, head, features, boxes, training):
  pooled = features if aligner is None else aligner(features, boxes)
  pooled = tf.reshape(pooled, [-1, CROP_SIZE, CROP_SIZE, pooled.shape[-1]])
  outputs = head(pooled, training=training)
  return outputs['fused'] + outputs['unfused'] if training else (
      outputs['fused'])


def _forward(aligner, head, features, boxes):
  return _branch(aligner, head, features, boxes, training=False)


def _forward_and_backward(aligner, head, features, boxes):
  weights = head.trainable_weights + (aligner.trainable_weights
                                      if aligner is not None else [])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.cast(
        _branch(aligner, head, features, boxes, training=True), tf.float32))
  return tape.gradient(loss, weights)


def _pool_picks_flat(groie, features, boxes, images):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(groie(features, boxes, box_indices=images))
  return tape.gradient(loss, groie.trainable_weights)


def _pool_picks_in_table(groie, features, boxes, images):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(grid_rcnn_model.pool_in_per_image_table(
        groie, features, boxes, images, tf.shape(features['2'])[0]))
  return tape.gradient(loss, groie.trainable_weights)


# Images per replica of the picks case: mmdetection's 2 per GPU, and the
# built-in set's Grid R-CNN (8 on its one replica).
PICKS_BATCH_SIZES = (2, 8)


def _training_picks_rows(setup, num_picks, precision):
  """Rows of the picks case: `num_picks` boxes spread over B images."""
  rows = []
  for batch in PICKS_BATCH_SIZES:
    features = inputs.fpn_features(batch, setup.image_size, setup.channels,
                                   tf.float32)
    picks = tf.reshape(inputs.rois(1, num_picks, setup.image_size), [-1, 4])
    images = tf.range(num_picks) % batch
    groie = GRoIE(crop_size=CROP_SIZE)
    groie(features, picks, box_indices=images)  # weights built eagerly
    bodies = {'GRoIE, flat picks (box_indices)': _pool_picks_flat,
              'GRoIE, picks in a per-image table': _pool_picks_in_table}
    functions = {name: tf.function(functools.partial(body, groie, features,
                                                     picks, images))
                 for name, body in bodies.items()}
    with tf.device(setup.device):
      timed = setup.time(functions)
    flat = next(iter(bodies))
    case = (f'grid training picks: {num_picks} of {batch} images, '
            f'{CROP_SIZE}x{CROP_SIZE}, C={setup.channels}, forward+backward')
    rows += [{
        'section': 'grid', 'case': case, 'variant': name,
        'precision': precision, 'xla': False,
        'extractor_weights': groie.count_params(),
        'gmac_per_roi': flops.graph_flops(
            functions[name].get_concrete_function().graph) / 2 /
                        num_picks / 1e9,
        'median_ms': 1e3 * timed[name], 'ratio': timed[name] / timed[flat],
    } for name in bodies]
  return rows


def run(setup, precision):
  if precision != 'float32':
    return []
  # A quarter of the layer section's RoIs: the head is ~1.1 GMAC per RoI.
  per_image = max(1, setup.layer_rois // 4)
  num_rois = setup.batch_size * per_image
  features = inputs.fpn_features(setup.batch_size, setup.image_size,
                                 setup.channels, tf.float32)
  boxes = inputs.rois(setup.batch_size, per_image, setup.image_size)
  pooled = tf.random.stateless_normal(
      [num_rois, CROP_SIZE, CROP_SIZE, setup.channels], [0, 0])
  stock = 'stock aligner + GridHead'
  branches = {
      stock: (roi_aligner.MultilevelROIAligner(CROP_SIZE), GridHead(),
              features),
      'GRoIE (paper) + GridHead': (GRoIE(crop_size=CROP_SIZE), GridHead(),
                                   features),
      'GridHead alone': (None, GridHead(), pooled),
  }
  for aligner, head, values in branches.values():
    _forward(aligner, head, values, boxes)  # weights built outside tf.function
  rows = []
  case = (f'grid: {setup.batch_size}x{per_image} RoIs, '
          f'{CROP_SIZE}x{CROP_SIZE}, C={setup.channels}')
  modes = (('forward', _forward), ('forward+backward', _forward_and_backward))
  for xla, (mode, body) in itertools.product(setup.xla, modes):
    functions = {
        name: tf.function(functools.partial(body, aligner, head, values,
                                            boxes), jit_compile=xla)
        for name, (aligner, head, values) in branches.items()}
    with tf.device(setup.device):
      timed = setup.time(functions)
    for name, (aligner, head, _) in branches.items():
      graph = functions[name].get_concrete_function().graph
      rows.append({
          'section': 'grid', 'case': f'{case}, {mode}', 'variant': name,
          'precision': precision, 'xla': xla,
          'head_weights': head.count_params(),
          'extractor_weights': aligner.count_params() if aligner else 0,
          'gmac_per_roi': flops.graph_flops(graph) / 2 / num_rois / 1e9,
          'median_ms': 1e3 * timed[name],
          'ratio': timed[name] / timed[stock],
      })
  return rows + _training_picks_rows(setup, num_rois, precision)
