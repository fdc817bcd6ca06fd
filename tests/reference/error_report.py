"""Prints the maximum error of every op and layer against its float64 reference.

    python -m tests.reference.error_report

Same inputs as the tests (edge-case boxes, non-symmetric maps, random
weights with gamma != 0); the figures are quoted in docs/numerics.md.
"""

import itertools
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from groie_tf.ops import roi_align
from groie_tf.layers import GeneralizedAttention
from groie_tf.layers import GRoIE
from groie_tf.layers import NonLocal2D
from groie_tf.layers.grid_head import GridHead
from groie_tf.ops import grid_points
from tests import layer_contract
from tests import test_context_block as context_test
from tests import test_generalized_attention as ga_test
from tests import test_grid_head as grid_head_test
from tests import test_grid_points as grid_points_test
from tests import test_groie as groie_test
from tests import test_non_local as non_local_test
from tests import test_roi_align as roi_test
from tests.reference import attention as attention_ref
from tests.reference import context_block as context_ref
from tests.reference import grid_head as grid_head_ref
from tests.reference import grid_points as grid_points_ref
from tests.reference import groie as groie_ref
from tests.reference import roi_align as roi_ref

GEOMETRIES = [(4, 11, 9, 3, 2), (8, 6, 7, 7, 2), (16, 3, 4, 2, 1),
              (2, 9, 13, 4, 3)]


def roi_align_rows():
  for implementation, aligned in itertools.product(roi_test.IMPLEMENTATIONS,
                                                   (True, False)):
    worst, scale = 0.0, 0.0
    for stride, height, width, size, ratio in GEOMETRIES:
      features = roi_test.make_features(height, width)
      boxes = roi_test.make_boxes(height * stride, width * stride)
      got = roi_align.roi_align(tf.constant(features), tf.constant(boxes),
                                size, stride, ratio, aligned,
                                implementation).numpy()
      want = roi_ref.roi_align(features, boxes, size, stride, ratio, aligned)
      worst = max(worst, np.abs(got - want).max())
      scale = max(scale, np.abs(want).max())
    # Named by the forward pass ('auto' runs crop_and_resize on a CPU).
    forward = 'gather' if implementation == 'gather' else 'crop_and_resize'
    yield (f'roi_align {forward} aligned={aligned}', 'float32', worst, scale)


def attention_rows():
  for dtype, compat in itertools.product(('float64', 'float32'),
                                         (False, True)):
    worst, scale = 0.0, 0.0
    for attention_type in ga_test.ALL_TYPES:
      x = ga_test.make_input((2, 7, 7, 12))
      layer = GeneralizedAttention(num_heads=3, attention_type=attention_type,
                                   mmcv_compat=compat, dtype=dtype)
      layer(tf.constant(x, dtype))
      layer_contract.randomize_weights(layer)
      got = layer(tf.constant(x, dtype)).numpy()
      want = attention_ref.generalized_attention(
          x, ga_test.reference_weights(layer), 3, attention_type,
          mmcv_compat=compat)
      worst = max(worst, np.abs(got - want).max())
      scale = max(scale, np.abs(want).max())
    yield (f'GeneralizedAttention, 15 types, mmcv_compat={compat}', dtype,
           worst, scale)


def non_local_rows():
  for dtype in ('float64', 'float32'):
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 8))
    layer = NonLocal2D(dtype=dtype)
    layer(tf.constant(x, dtype))
    layer_contract.randomize_weights(layer, scale=0.5)
    got = layer(tf.constant(x, dtype)).numpy()
    want = attention_ref.non_local(x, non_local_test.reference_weights(layer))
    yield 'NonLocal2D', dtype, np.abs(got - want).max(), np.abs(want).max()


def groie_rows():
  features, boxes = groie_test.make_features(), groie_test.make_boxes()
  for dtype in ('float64', 'float32'):
    layer = groie_test.build(GRoIE(crop_size=7, dtype=dtype), features, boxes)
    got = layer(groie_test.tf_features(features, dtype),
                tf.constant(boxes)).numpy()
    want = groie_ref.groie(features, boxes, layer.get_config(),
                           groie_ref.weights_by_name(layer))
    yield ('GRoIE paper setting (conv5x5, sum, attention)', dtype,
           np.abs(got - want).max(), np.abs(want).max())
  worst, scale = 0.0, 0.0
  for options in groie_test.ABLATIONS.values():
    layer = groie_test.build(GRoIE(crop_size=5, **options),
                             groie_test.make_features(seed=1), boxes)
    got = layer(groie_test.tf_features(groie_test.make_features(seed=1)),
                tf.constant(boxes)).numpy()
    want = groie_ref.groie(groie_test.make_features(seed=1), boxes,
                           layer.get_config(), groie_ref.weights_by_name(layer))
    worst = max(worst, np.abs(got - want).max() / np.abs(want).max())
  yield (f'GRoIE, {len(groie_test.ABLATIONS)} ablation settings (relative)',
         'float32', worst, 1.0)


def context_block_rows():
  """GCNet's block, both poolings x three fusions, every weight random."""
  x = np.random.default_rng(2).standard_normal((2, 9, 6, 16))
  for dtype in ('float64', 'float32'):
    worst, scale = 0.0, 0.0
    for pooling_type, fusion_types in itertools.product(
        ('att', 'avg'), context_test.FUSIONS):
      layer = context_test._random_block(  # pylint: disable=protected-access
          x, dtype, pooling_type=pooling_type, fusion_types=fusion_types)
      got = layer(tf.constant(x, dtype)).numpy()
      want = context_ref.context_block(
          x, context_test.reference_weights(layer), pooling_type,
          fusion_types)
      worst = max(worst, np.abs(got - want).max())
      scale = max(scale, np.abs(want).max())
    yield 'ContextBlock, att/avg x 3 fusions', dtype, worst, scale


def grid_head_rows():
  """Grid R-CNN's head, narrowed (2 of its 8 convs, 4 channels in and per
  point) because the float64 loop reference is slow; training outputs."""
  x = np.random.default_rng(0).standard_normal((1, 14, 14, 4))
  neighbours = {i: sorted(ns)
                for i, ns in grid_head_test._grid_neighbours().items()}  # pylint: disable=protected-access
  for dtype in ('float64', 'float32'):
    head = GridHead(num_convs=2, point_channels=4, norm_groups=36,
                    dtype=dtype)
    head(tf.constant(x, dtype), training=True)
    layer_contract.randomize_weights(head, seed=1, scale=0.4)
    got = head(tf.constant(x, dtype), training=True)
    weights = grid_head_test._torch_weights(head)  # pylint: disable=protected-access
    want = grid_head_ref.grid_head(np.transpose(x[0], (2, 0, 1)), weights,
                                   neighbours, 36)
    worst = max(np.abs(np.transpose(got[key].numpy()[0], (2, 0, 1)) -
                       want[key]).max() for key in ('fused', 'unfused'))
    scale = max(np.abs(want[key]).max() for key in ('fused', 'unfused'))
    yield 'GridHead, fused and unfused heatmaps', dtype, worst, scale


def grid_point_rows():
  """Grid R-CNN's targets (0/1 maps, so any error is a whole pixel), and
  its decoding of random logits, in image pixels."""
  rois, gts = grid_points_test.make_rois_and_gts()
  got = np.transpose(grid_points.grid_targets(
      grid_points_test._mg(rois), grid_points_test._mg(gts)).numpy(),  # pylint: disable=protected-access
                     (0, 3, 1, 2))
  want = grid_points_ref.targets(rois, gts)
  yield 'grid targets, 40 RoIs x 9 points', 'float32', np.abs(
      got - want).max(), np.abs(want).max()
  logits, rois = grid_points_test.make_logits_and_rois()
  got = grid_points.decode_boxes(
      tf.constant(np.transpose(logits, (0, 2, 3, 1)), tf.float32),
      tf.constant(grid_points_test._mg(rois))).numpy()[:, [1, 0, 3, 2]]  # pylint: disable=protected-access
  want = grid_points_ref.decode(logits, rois)
  yield 'grid decoding, box corners in pixels', 'float32', np.abs(
      got - want).max(), np.abs(want).max()


def all_rows():
  """`(computation, dtype, max abs error, max abs reference value)` rows."""
  for rows in (roi_align_rows, attention_rows, non_local_rows, groie_rows,
               context_block_rows, grid_head_rows, grid_point_rows):
    yield from rows()


def main():
  print(f'{"computation":58s} {"dtype":8s} {"max abs error":>14s} '
        f'{"max |ref|":>10s}')
  for name, dtype, error, scale in all_rows():
    print(f'{name:58s} {dtype:8s} {error:14.2e} {scale:10.3g}')


if __name__ == '__main__':
  main()
