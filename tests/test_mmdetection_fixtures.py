"""The mmdetection layout against the real mmdetection 3.3.0, stage by stage.

The fixtures (`tests/fixtures/mmdet/`, written by
`tools/mmdet_reference/make_fixtures.py` in its own PyTorch environment)
hold reduced-width Faster, Mask and GC-Net R-CNNs, with and without GRoIE,
with seeded random weights: their state dicts, one image and every
stage's output. `tests/mmdet_stages.py` loads each state dict into the
model `builder.build_model` makes for the config, feeds each stage
mmdetection's own input of that stage, and measures the errors
(`docs/numerics.md` lists them).

Mutations that fail here: Keras 'same' padding back in the strided convs
of the blocks; P6 by another rule than P5[::2, ::2]; anchor centres at
stride / 2; the first FC's kernel read (H, W, C) instead of (C, H, W);
the background class taken first instead of last.
"""

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.conversion import mmdet_state_dict
from groie_tf.modeling import resnet
from groie_tf.modeling.mmdetection_layout import fpn
from groie_tf.ops import anchors
from groie_tf.ops import mask_paste
from groie_tf.ops import roi_align
from tests import mmdet_stages

pytestmark = pytest.mark.slow

# float32 against float32, relative to the largest reference value.
FEATURE_TOLERANCE = 1e-4
BOX_TOLERANCE_PX = 1e-3
SCORE_TOLERANCE = 1e-5


def _check(errors):
  for stage, error in errors.items():
    if stage.endswith('box_px'):
      limit = BOX_TOLERANCE_PX
    elif stage.endswith('score') or stage.endswith('probability'):
      limit = SCORE_TOLERANCE
    elif stage == 'anchors (px)':
      limit = 0.0
    else:
      limit = FEATURE_TOLERANCE
    assert error <= limit, (stage, error, errors)


@pytest.mark.parametrize('name', list(mmdet_stages.MODELS))
def test_every_stage_matches_mmdetection(name):
  errors = mmdet_stages.compare(name)
  assert 'count_or_labels_differ' not in str(errors)
  _check(errors)


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
