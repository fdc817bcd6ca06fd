"""Stage-by-stage comparison of the mmdetection layout with fixtures written
by the real mmdetection 3.3.0 (`tools/mmdet_reference/`).

Each stage is fed mmdetection's own input of that stage (teacher forcing),
so that an error is the stage's own; the end-to-end row runs the whole
model on the image. Run as a script to print the table of
`docs/numerics.md`:

    python -m tests.mmdet_stages
"""

import os
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from groie_tf.configs import grid_rcnn as grid_config
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.conversion import mmdet_state_dict
from groie_tf.modeling import builder
from groie_tf.ops import anchors as anchors_lib
from groie_tf.ops import grid_points

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'mmdet')

# The fixtures' models: (mask branch, GRoIE, GC ResNet).
MODELS = {
    'faster_rcnn': (False, False, False),
    'faster_rcnn_groie': (False, True, False),
    'mask_rcnn': (True, False, False),
    'mask_rcnn_groie': (True, True, False),
    'gcnet_mask_rcnn': (True, False, True),
    'gcnet_mask_rcnn_groie': (True, True, True),
    'grid_rcnn': (False, False, False),
}
# Grid R-CNN (`grid-rcnn_r50_fpn_gn-head_2x_coco`): its box head only
# classifies, and a grid head refines its detections.
GRID_MODELS = ('grid_rcnn',)
LEVELS = ('2', '3', '4', '5', '6')
DELTA_ORDER = list(mmdet_state_dict.DELTA_ORDER)


def load_fixture(name: str) -> Dict[str, np.ndarray]:
  with np.load(os.path.join(FIXTURES, f'{name}.npz')) as data:
    return dict(data)


def model_config(name: str) -> groie_config.GRoIEMaskRCNN:
  """The reduced-width config of `tools/mmdet_reference/make_fixtures.py`:
  ResNet-50 at 1/16 width (base 4), 16 FPN channels, 32-wide FCs, 8
  classes, 300 proposals, 50 detections; Grid R-CNN's grid head has 4
  channels per point and GroupNorm(12), its test NMS IoU 0.3 and score
  threshold 0.03 (its config's)."""
  include_mask, groie, gc = MODELS[name]
  groie_block = {'sampling_ratio': 2, 'mmcv_compat': True,
                 'attention_num_heads': 6} if groie else None
  backbone = {'model_id': 50, 'depth_multiplier': 1 / 16,
              'scale_stem': True}
  grid = name in GRID_MODELS
  config_class, extra = groie_config.GRoIEMaskRCNN, {}
  if grid:
    config_class = grid_config.GridRCNN
    extra = {'grid_head': {'num_convs': 8, 'point_channels': 4,
                           'norm_groups': 12},
             'grid_groie': groie_block}
  config = config_class(
      layout='mmdetection', num_classes=9, include_mask=include_mask,
      input_size=[96, 160, 3], min_level=2, max_level=6,
      backbone={'type': 'gc_resnet' if gc else 'resnet',
                'gc_resnet' if gc else 'resnet': backbone},
      norm_activation={'norm_epsilon': 1e-5, 'activation': 'relu'},
      decoder={'type': 'fpn', 'fpn': {'num_filters': 16}},
      anchor={'aspect_ratios': [2.0, 1.0, 0.5], 'anchor_size': 8.0,
              'num_scales': 1},
      rpn_head={'num_convs': 1, 'num_filters': 16},
      roi_generator={'test_pre_nms_top_k': 300, 'test_num_proposals': 300,
                     'test_nms_iou_threshold': 0.7},
      detection_head={'num_convs': 0, 'num_fcs': 2, 'fc_dims': 32},
      mask_head={'num_convs': 4, 'num_filters': 16},
      detection_generator={'pre_nms_score_threshold': 0.03 if grid else 0.05,
                           'nms_iou_threshold': 0.3 if grid else 0.5,
                           'max_num_detections': 50},
      box_groie=groie_block, mask_groie=groie_block, **extra)
  return config


def build_converted(name: str, fixture: Dict[str, np.ndarray],
                    load=mmdet_state_dict.load_state_dict):
  """The model of `name` with the fixture's mmdetection weights."""
  config = model_config(name)
  model = builder.build_model(
      config, tf_keras.layers.InputSpec(shape=[None] + config.input_size))
  load(model, mmdet_state_dict.numpy_state_dict(fixture))
  return model


def relative_error(got, want) -> float:
  """max |got - want| / max |want|."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if got.shape != want.shape:
    raise AssertionError(f'shapes differ: {got.shape} and {want.shape}')
  scale = np.abs(want).max()
  return float(np.abs(got - want).max() / (scale if scale else 1.0))


def _xyxy(yxyx):
  return np.asarray(yxyx)[..., [1, 0, 3, 2]]


def _yxyx(xyxy):
  return np.asarray(xyxy)[..., [1, 0, 3, 2]]


def _ours_to_mmdet_deltas(deltas, groups):
  """`[..., 4 * groups]` (dy, dx, dh, dw) -> (dx, dy, dw, dh)."""
  shape = deltas.shape
  grouped = deltas.reshape(shape[:-1] + (groups, 4))
  return grouped[..., DELTA_ORDER].reshape(shape)


def _set_errors(got_boxes, got_scores, got_labels, want_boxes, want_scores,
                want_labels) -> Dict[str, float]:
  """Errors of an ordered detection set; inf if the count or the labels
  differ."""
  if len(got_boxes) != len(want_boxes) or (
      want_labels is not None and
      not np.array_equal(got_labels, want_labels)):
    return {'count_or_labels_differ': float('inf')}
  if not len(want_boxes):
    return {'box_px': 0.0, 'score': 0.0}
  return {'box_px': float(np.abs(got_boxes - want_boxes).max()),
          'score': float(np.abs(got_scores - want_scores).max())}


def compare(name: str, model=None, fixture=None) -> Dict[str, float]:
  """Every stage's error for one fixture: relative for maps and logits,
  pixels and absolute score for box sets (inf if their counts, labels or
  order differ)."""
  fixture = load_fixture(name) if fixture is None else fixture
  model = build_converted(name, fixture) if model is None else model
  include_mask = MODELS[name][0]
  grid = name in GRID_MODELS
  errors = {}
  image = tf.constant(fixture['in/image'])
  image_shape = tf.constant(fixture['in/img_shape'][None].astype(np.float32))

  features = model.backbone(image, training=False)
  for level in '2345':
    errors[f'C{level}'] = relative_error(features[level][0],
                                         fixture[f'c{level}'][0])
  backbone = {l: tf.constant(fixture[f'c{l}']) for l in '2345'}
  pyramid = model.decoder(backbone, training=False)
  for level in LEVELS:
    errors[f'P{level}'] = relative_error(pyramid[level][0],
                                         fixture[f'p{level}'][0])

  p = {l: tf.constant(fixture[f'p{l}']) for l in LEVELS}
  scores, deltas = model.rpn_head(p)
  num_anchors = scores['2'].shape[-1]
  errors['RPN logits'] = max(relative_error(scores[l][0],
                                            fixture[f'rpn_cls/p{l}'][0])
                             for l in LEVELS)
  errors['RPN deltas'] = max(relative_error(
      _ours_to_mmdet_deltas(deltas[l].numpy()[0], num_anchors),
      fixture[f'rpn_reg/p{l}'][0]) for l in LEVELS)

  anchors = anchors_lib.multilevel_anchors(
      {l: fixture[f'p{l}'].shape[1:3] for l in LEVELS}, 8.0, 1,
      [2.0, 1.0, 0.5])
  errors['anchors (px)'] = max(float(np.abs(
      _xyxy(anchors[l].numpy().reshape(-1, 4)) -
      fixture[f'anchors/p{l}']).max()) for l in LEVELS)

  # Proposals from mmdetection's RPN outputs, in this layout's order.
  rpn_scores = {l: tf.constant(fixture[f'rpn_cls/p{l}']) for l in LEVELS}
  rpn_deltas = {l: tf.constant(_ours_to_mmdet_deltas(
      fixture[f'rpn_reg/p{l}'], num_anchors)) for l in LEVELS}
  rois, roi_scores = model.roi_generator(rpn_deltas, rpn_scores, None,
                                         image_shape, training=False)
  want = fixture['proposals']
  count = int(np.count_nonzero(roi_scores.numpy()[0] > 0))
  errors.update({f'proposals {k}': v for k, v in _set_errors(
      _xyxy(rois.numpy()[0, :count]), roi_scores.numpy()[0, :count], None,
      want[:, :4], want[:, 4], None).items()})

  mmdet_rois = tf.constant(_yxyx(want[None, :, :4]).astype(np.float32))
  roi_features = model.roi_aligner(p, mmdet_rois)
  num_feats = len(fixture['bbox_feats'])
  errors['RoI features'] = relative_error(roi_features[0, :num_feats],
                                          fixture['bbox_feats'])
  (detection_head,) = model.detection_head
  class_outputs, box_outputs = detection_head(roi_features)
  classes = class_outputs.numpy()[0]
  num_classes = classes.shape[-1] - 1
  errors['class logits'] = relative_error(
      np.concatenate([classes[:, 1:], classes[:, :1]], 1),
      fixture['cls_score'])
  if not grid:  # with_reg=False: the deltas are zeros, none to compare
    errors['box deltas'] = relative_error(
        _ours_to_mmdet_deltas(box_outputs.numpy()[0][:, 4:], num_classes),
        fixture['bbox_pred'])

  detections = model.detection_generator(
      box_outputs, class_outputs, mmdet_rois, image_shape,
      [10.0, 10.0, 5.0, 5.0])
  count = int(detections['num_detections'][0])
  det = fixture['det_bboxes']
  # Grid R-CNN: the box head's detections are those before the grid's vote.
  box_det = fixture['grid/bboxes_before'] if grid else det
  errors.update({f'detections {k}': v for k, v in _set_errors(
      _xyxy(detections['detection_boxes'].numpy()[0, :count]),
      detections['detection_scores'].numpy()[0, :count],
      detections['detection_classes'].numpy()[0, :count] - 1,
      box_det[:, :4], box_det[:, 4], fixture['det_labels']).items()})

  if grid:
    errors.update(_grid_errors(model, p, fixture))

  if include_mask:
    det_rois = tf.constant(_yxyx(det[None, :, :4]).astype(np.float32))
    mask_features = model.mask_roi_aligner(p, det_rois)
    num_feats = len(fixture['mask_feats'])
    errors['mask RoI features'] = relative_error(
        mask_features[0, :num_feats], fixture['mask_feats'])
    logits = model.mask_head(
        [mask_features, tf.constant(fixture['det_labels'][None] + 1)])
    errors['mask logits'] = relative_error(logits[0], fixture['mask_pred'])

  outputs = model(image, image_shape=image_shape, training=False)
  count = int(outputs['num_detections'][0])
  if grid:
    errors.update({f'end to end before grid {k}': v for k, v in _set_errors(
        _xyxy(outputs['detection_boxes_before_grid'].numpy()[0, :count]),
        outputs['detection_scores'].numpy()[0, :count],
        outputs['detection_classes'].numpy()[0, :count] - 1,
        box_det[:, :4], box_det[:, 4], fixture['det_labels']).items()})
  errors.update({f'end to end {k}': v for k, v in _set_errors(
      _xyxy(outputs['detection_boxes'].numpy()[0, :count]),
      outputs['detection_scores'].numpy()[0, :count],
      outputs['detection_classes'].numpy()[0, :count] - 1,
      det[:, :4], det[:, 4], fixture['det_labels']).items()})
  if include_mask and count == len(det):
    probabilities = 1.0 / (1.0 + np.exp(-fixture['mask_pred']))
    errors['end to end mask probability'] = float(np.abs(
        outputs['detection_masks'].numpy()[0, :count] - probabilities).max())
  return errors


def _grid_errors(model, pyramid, fixture) -> Dict[str, float]:
  """The grid branch on mmdetection's detections before the vote: their
  14x14 features from mmdetection's P2-P5, the fused heatmaps from
  mmdetection's features, the boxes voted from mmdetection's heatmaps,
  and the whole branch (our features, heatmaps and vote) against
  mmdetection's refined boxes."""
  errors = {}
  before = fixture['grid/bboxes_before'][:, :4]  # [M, 4] xyxy
  rois = tf.constant(_yxyx(before[None]).astype(np.float32))
  features = model.grid_roi_aligner(pyramid, rois)  # [1, M, 14, 14, C]
  num_feats = len(fixture['grid/feats'])
  errors['grid RoI features'] = relative_error(features[0, :num_feats],
                                               fixture['grid/feats'])
  heatmaps = model.grid_head(tf.constant(fixture['grid/feats']),
                             training=False)['fused']
  errors['grid heatmaps'] = relative_error(heatmaps, fixture['grid/pred'])
  refined = fixture['det_bboxes'][:, :4]
  voted = grid_points.decode_boxes(tf.constant(fixture['grid/pred']),
                                   rois[0, :num_feats])
  errors['grid vote box_px'] = float(np.abs(
      _xyxy(voted.numpy()) - refined[:num_feats]).max())
  logits = model.grid_head(features[0], training=False)['fused']
  branch = grid_points.decode_boxes(logits, rois[0])
  errors['grid branch box_px'] = float(np.abs(
      _xyxy(branch.numpy()) - refined).max())
  return errors


# float32 against float32: maps and logits relative to the largest
# reference value, boxes in pixels, scores and probabilities absolute.
FEATURE_TOLERANCE = 1e-4
BOX_TOLERANCE_PX = 1e-3
SCORE_TOLERANCE = 1e-5


def check_errors(errors: Dict[str, float]) -> None:
  """Fails unless every stage of `compare` is within float32 tolerance."""
  assert 'count_or_labels_differ' not in str(errors), errors
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


def main(names: Optional[list] = None) -> None:
  names = names or [n for n in MODELS
                    if os.path.exists(os.path.join(FIXTURES, f'{n}.npz'))]
  table = {name: compare(name) for name in names}
  stages = list(dict.fromkeys(k for errors in table.values() for k in errors))
  print('| stage | ' + ' | '.join(names) + ' |')
  print('| --- |' + ' --- |' * len(names))
  for stage in stages:
    cells = [f'{table[n][stage]:.1e}' if stage in table[n] else '-'
             for n in names]
    print(f'| {stage} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main()
