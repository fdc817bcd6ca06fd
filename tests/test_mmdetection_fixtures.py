"""The mmdetection layout against the real mmdetection 3.3.0, stage by stage.

The fixtures (`tests/fixtures/mmdet/`, written by
`tools/mmdet_reference/make_fixtures.py` in its own PyTorch environment)
hold reduced-width Faster, Mask and GC-Net R-CNNs, with and without GRoIE,
and a Grid R-CNN, with seeded random weights: their state dicts, one image and every
stage's output. `tests/mmdet_stages.py` loads each state dict into the
model `builder.build_model` makes for the config, feeds each stage
mmdetection's own input of that stage, and measures the errors
(`docs/numerics.md` lists them).

Mutations that fail here: Keras 'same' padding back in the strided convs
of the blocks; P6 by another rule than P5[::2, ::2]; anchor centres at
stride / 2; the first FC's kernel read (H, W, C) instead of (C, H, W);
the background class taken first instead of last; the grid head's grouped
transposed convs split in another group order, each point's neighbours
in another order (an edge's transition then maps to another edge), or the
fusion's edges applied in the other direction.
"""

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.conversion import mmdet_state_dict
from groie_tf.layers import grid_head
from groie_tf.modeling import resnet
from groie_tf.modeling.mmdetection_layout import fpn
from groie_tf.ops import anchors
from groie_tf.ops import mask_paste
from groie_tf.ops import roi_align
from tests import mmdet_stages

pytestmark = pytest.mark.slow

FEATURE_TOLERANCE = mmdet_stages.FEATURE_TOLERANCE


@pytest.mark.parametrize('name', list(mmdet_stages.MODELS))
def test_every_stage_matches_mmdetection(name):
  errors = mmdet_stages.compare(name)
  assert 'count_or_labels_differ' not in str(errors)
  mmdet_stages.check_errors(errors)


def _patched_compare(name, patches, fixture=None):
  with pytest.MonkeyPatch.context() as patch:
    for (module, attribute), value in patches.items():
      patch.setattr(module, attribute, value)
    return mmdet_stages.compare(name, fixture=fixture)


def test_keras_padding_in_strided_convs_fails():
  errors = _patched_compare('mask_rcnn',
                            {(resnet, 'pytorch_padded'): lambda block: block})
  assert errors['C2'] <= FEATURE_TOLERANCE < 0.05 < errors['C3']


def test_p6_by_another_rule_fails():
  errors = _patched_compare(
      'mask_rcnn',
      {(fpn, 'subsample'): lambda x: tf.nn.max_pool2d(x, 3, 2, 'SAME')})
  assert errors['P5'] <= FEATURE_TOLERANCE < 0.05 < errors['P6']


def test_anchors_at_half_a_stride_fail():
  level_anchors = anchors.level_anchors

  def shifted(height, width, stride, *args):
    return level_anchors(height, width, stride, *args) + stride / 2

  errors = _patched_compare('faster_rcnn',
                            {(anchors, 'level_anchors'): shifted})
  assert errors['anchors (px)'] > 1
  assert 'count_or_labels_differ' in str(errors) or (
      errors['proposals box_px'] > 1)


def test_fc_kernel_flattened_hwc_fails():
  errors = _patched_compare(
      'faster_rcnn',
      {(mmdet_state_dict, 'flattened_fc_kernel'): lambda w, c, s: w.T})
  assert errors['class logits'] > 0.05


def test_background_taken_first_fails():
  """A converter reading the background from row 0: the same as giving the
  right converter a checkpoint whose background row comes first."""
  fixture = mmdet_stages.load_fixture('faster_rcnn')
  for key in ('w/roi_head.bbox_head.fc_cls.weight',
              'w/roi_head.bbox_head.fc_cls.bias'):
    fixture[key] = np.roll(fixture[key], 1, axis=0)
  errors = _patched_compare('faster_rcnn', {}, fixture=fixture)
  assert errors['class logits'] > 0.05


def _grid_errors(fixture=None):
  """The grid stages of `mmdet_stages.compare`, alone (the mutations
  below change the grid head only)."""
  fixture = mmdet_stages.load_fixture('grid_rcnn') if fixture is None else (
      fixture)
  model = mmdet_stages.build_converted('grid_rcnn', fixture)
  pyramid = {l: tf.constant(fixture[f'p{l}']) for l in mmdet_stages.LEVELS}
  return mmdet_stages._grid_errors(model, pyramid, fixture)  # pylint: disable=protected-access


def test_the_grid_state_dict_maps_one_to_one():
  """Every key of mmdetection's Grid R-CNN is used and every variable set
  (`load_state_dict` refuses otherwise); the box head has no regression to
  take an `fc_reg` (mmdetection's `with_reg=False` has none either)."""
  fixture = mmdet_stages.load_fixture('grid_rcnn')
  state = mmdet_state_dict.numpy_state_dict(fixture)
  assert len([k for k in state if k.startswith('roi_head.grid_head.')]) == 230
  assert not [k for k in state if 'fc_reg' in k]
  model = mmdet_stages.build_converted('grid_rcnn', fixture)
  state['roi_head.bbox_head.fc_reg.weight'] = np.zeros([32, 32], np.float32)
  with pytest.raises(ValueError, match='1 state-dict keys were not mapped: '
                     'roi_head.bbox_head.fc_reg.weight'):
    mmdet_state_dict.load_state_dict(model, state)


def test_grid_deconv_groups_in_another_order_fail():
  split = mmdet_state_dict.grouped_transposed_kernels
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mmdet_state_dict, 'grouped_transposed_kernels',
                  lambda weight, groups: split(weight, groups)[::-1])
    errors = _grid_errors()
  assert errors['grid RoI features'] <= FEATURE_TOLERANCE
  assert errors['grid heatmaps'] > 0.05
  assert errors['grid branch box_px'] > 0.1


def test_grid_neighbours_in_another_order_fail():
  """Each point's neighbours reversed (right, down, up, left): the same 24
  edges, but `forder_trans.{i}.{j}` lands on another edge's transition."""
  reversed_order = [tuple(reversed(n)) for n in grid_head.neighbour_points()]
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(grid_head, 'neighbour_points', lambda: reversed_order)
    errors = _grid_errors()
  assert errors['grid heatmaps'] > 0.05


def test_grid_fusion_in_the_other_direction_fails():
  """Each edge's transition applied to the receiving point's features
  instead of its neighbour's."""
  def reversed_fusion(head, x):
    points = head._points(x)  # pylint: disable=protected-access
    apply = lambda edge, features: edge[1](edge[0](features))
    first = [points[i] + tf.add_n([apply(edge, points[i])
                                   for edge in head.first_order[i]])
             for i in range(len(points))]
    return [points[i] + tf.add_n([apply(edge, first[i])
                                  for edge in head.second_order[i]])
            for i in range(len(points))]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(grid_head.GridHead, '_fuse', reversed_fusion)
    errors = _grid_errors()
  assert errors['grid heatmaps'] > 0.05


@pytest.mark.parametrize('name', ['mask_rcnn', 'gcnet_mask_rcnn_groie'])
def test_pasted_masks_are_mmdetections(name):
  """Teacher-forced: mmdetection's mask logits and rescaled boxes."""
  fixture = mmdet_stages.load_fixture(name)
  shape = tuple(fixture['masks_shape'])
  want = np.unpackbits(fixture['masks'])[:np.prod(shape)].reshape(
      shape).astype(bool)
  probabilities = 1.0 / (1.0 + np.exp(-fixture['mask_pred'].astype(
      np.float32)))
  boxes = fixture['det_bboxes_rescaled'][:, [1, 0, 3, 2]]
  got = mask_paste.paste_masks(probabilities, boxes, *shape[1:]) >= \
      mask_paste.MASK_THRESHOLD
  assert want.any()
  np.testing.assert_array_equal(got, want)


def test_adaptive_roi_align_is_mmcvs():
  """mmcv's RoIAlign(7, 1/4, sampling_ratio=0 and 2, aligned) through
  torchvision's kernel, on tiny, elongated, whole-image and partly outside
  boxes; boxes needing more than ADAPTIVE_MAX_SAMPLES samples per bin are
  measured apart."""
  with np.load(f'{mmdet_stages.FIXTURES}/roi_align_adaptive.npz') as data:
    fixture = dict(data)
  features = tf.constant(fixture['features'])
  boxes = fixture['boxes'][:, [1, 0, 3, 2]]  # yxyx
  extent = (boxes[:, 2:] - boxes[:, :2]) / 4.0
  capped = np.any(np.ceil(extent / 7) > roi_align.ADAPTIVE_MAX_SAMPLES, 1)
  for sampling_ratio, key in ((0, 'pooled'), (2, 'pooled_sr2')):
    got = roi_align.roi_align(features, tf.constant(boxes[None]), 7, 4.0,
                              sampling_ratio=sampling_ratio,
                              implementation='gather').numpy()[0]
    want = fixture[key]
    scale = np.abs(want).max()
    exact = ~capped if sampling_ratio == 0 else np.ones(len(boxes), bool)
    assert np.abs(got[exact] - want[exact]).max() <= 1e-5 * scale


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
