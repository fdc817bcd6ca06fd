"""The mmdetection layout's layers against float64 references written from
mmdetection's semantics (`tests/reference/mmdet_detector.py`).

The comparison with the real mmdetection, stage by stage, is
`tests/test_mmdetection_fixtures.py`. Mutations these tests catch: Keras
'same' padding back in the stem conv, the stem max pool or a strided 3x3
conv; P6 by anything but P5[::2, ::2]; FPN upsampling by exactly 2 on odd
sizes; anchor centres at stride / 2, or ratios read as h/w; the lower
log-size clamp dropped; zero-size proposals kept; NMS suppressing at IoU
equal to the threshold; a norm in a head; padding RoIs detected.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import task_factory
from official.vision.modeling.layers import detection_generator
from official.vision.modeling.layers import nn_blocks

from groie_tf.conversion import mmdet_state_dict
from groie_tf.data import mmdetection_resize
from groie_tf.data import mmdetection_targets
from groie_tf.errors import ConfigError
from groie_tf.layers import GridHead
from groie_tf.modeling import builder
from groie_tf.modeling import gc_resnet
from groie_tf.modeling import resnet
from groie_tf.modeling.mmdetection_layout import fpn as fpn_lib
from groie_tf.modeling.mmdetection_layout import heads
from groie_tf.modeling.mmdetection_layout import model as mmdet_model
from groie_tf.modeling.mmdetection_layout import proposals
from groie_tf.ops import anchors
from tests import mmdet_stages
from tests.tiny_experiment import tiny_own_data_experiment
from tests.reference import grid_head as ref_grid
from tests.reference import mmdet_detector as ref

EPS = 1e-5


def _randomize(layer, seed):
  """Random weights, batch-norm variances positive."""
  rng = np.random.default_rng(seed)
  for weight in layer.weights:
    value = rng.standard_normal(weight.shape) * 0.3
    if 'moving_variance' in weight.name:
      value = rng.uniform(0.5, 2.0, weight.shape)
    elif 'gamma' in weight.name:
      value = rng.uniform(0.5, 1.5, weight.shape)
    weight.assign(value.astype(weight.dtype.as_numpy_dtype))


@pytest.fixture
def float64_policy():
  tf_keras.mixed_precision.set_global_policy('float64')


@pytest.mark.parametrize('size', [(8, 10), (7, 9), (6, 11)])
@pytest.mark.parametrize('kernel_size,stride', [(3, 2), (7, 2), (3, 1)])
def test_symmetric_padding_conv_pads_as_pytorch(size, kernel_size, stride):
  x = np.random.default_rng(0).standard_normal((1,) + size + (3,))
  conv = resnet.SymmetricPaddingConv2D(filters=4, kernel_size=kernel_size,
                                       strides=stride, dtype='float64')
  got = conv(x).numpy()[0]
  want = ref.conv2d(x[0], conv.kernel.numpy(), conv.bias.numpy(),
                    stride=stride, padding=kernel_size // 2)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  keras = tf_keras.layers.Conv2D(4, kernel_size, strides=stride,
                                 padding='same', dtype='float64')
  keras(x)
  keras.set_weights(conv.get_weights())
  differs = np.abs(keras(x).numpy()[0] - want).max() > 1e-3
  # Keras 'same' is PyTorch's padding exactly when the size is odd or the
  # stride 1: the even strided case is the one that shifts the grid.
  assert differs == (stride == 2 and size[0] % 2 == 0)


def _reference_resnet50(x, backbone):
  """C2..C5 of a ResNet-50 as mmdetection computes it, from the Keras
  model's weights (PyTorch padding, 'pytorch' style: stride in conv2)."""
  layers = backbone.layers
  conv = next(l for l in layers if isinstance(l, tf_keras.layers.Conv2D))
  norm = next(l for l in layers
              if isinstance(l, tf_keras.layers.BatchNormalization))

  def bn(y, layer):
    return ref.batch_norm(y, *[w.numpy() for w in
                               (layer.gamma, layer.beta, layer.moving_mean,
                                layer.moving_variance)], EPS)

  y = ref.relu(bn(ref.conv2d(x, conv.kernel.numpy(), stride=2, padding=3),
                  norm))
  y = ref.max_pool2d(y, 3, 2, 1)
  blocks = [l for l in layers if isinstance(l, nn_blocks.BottleneckBlock)]
  outputs, index = [], 0
  for stage, repeats in enumerate([3, 4, 6, 3]):
    for b in range(repeats):
      block = blocks[index]
      index += 1
      stride = 2 if stage > 0 and b == 0 else 1
      # pylint: disable=protected-access
      shortcut = y
      if block._use_projection:
        shortcut = bn(ref.conv2d(y, block._shortcut.kernel.numpy(),
                                 stride=stride), block._norm0)
      z = ref.relu(bn(ref.conv2d(y, block._conv1.kernel.numpy()),
                      block._norm1))
      z = ref.relu(bn(ref.conv2d(z, block._conv2.kernel.numpy(),
                                 stride=stride, padding=1), block._norm2))
      z = bn(ref.conv2d(z, block._conv3.kernel.numpy()), block._norm3)
      y = ref.relu(z + shortcut)
    outputs.append(y)
  return outputs


def _small_resnet50(pytorch_padding, shape, backbone_class=resnet.ResNet,
                    **kwargs):
  return backbone_class(
      model_id=50, depth_multiplier=0.0625, scale_stem=True,
      pytorch_padding=pytorch_padding, norm_epsilon=EPS,
      input_specs=tf_keras.layers.InputSpec(shape=[None, *shape, 3]),
      **kwargs)


def test_pytorch_padded_resnet50_matches_mmdetection_semantics(
    float64_policy):
  del float64_policy
  shape = (64, 96)
  # Model Garden's ResNet reads float32 inputs: representable ones here.
  x = np.random.default_rng(1).standard_normal((1, *shape, 3)).astype(
      np.float32).astype(np.float64)
  backbone = _small_resnet50(True, shape)
  _randomize(backbone, seed=2)
  got = backbone(x, training=False)
  want = _reference_resnet50(x[0], backbone)
  for level, expected in zip('2345', want):
    np.testing.assert_allclose(got[level].numpy()[0], expected, rtol=1e-10,
                               atol=1e-10)
  # Keras padding on the same weights shifts every stage: the mutation.
  keras = _small_resnet50(False, shape)
  keras.set_weights(backbone.get_weights())
  c2 = keras(x, training=False)['2'].numpy()[0]
  assert np.abs(c2 - want[0]).max() > 0.1 * np.abs(want[0]).max()


def test_gc_resnet_takes_the_padding_and_keeps_its_context_blocks(
    float64_policy):
  del float64_policy
  shape = (64, 96)
  x = np.random.default_rng(3).standard_normal((1, *shape, 3)).astype(
      np.float32)
  gc = _small_resnet50(True, shape, gc_resnet.GCResNet, gc_levels=(3, 4, 5))
  blocks = [l for l in gc.layers if isinstance(l, nn_blocks.BottleneckBlock)]
  assert sum(isinstance(b, gc_resnet.GCBottleneckBlock) for b in blocks) == 13
  assert all(type(b).__name__.startswith('PyTorchPadded') for b in blocks)
  # Context blocks start as the identity: the padded plain ResNet with the
  # same other weights computes the same maps.
  plain = _small_resnet50(True, shape)
  _randomize(plain, seed=4)
  gc_variables = {id(v) for b in blocks if hasattr(b, 'context_block')
                  for v in b.context_block.variables}
  others = [v for v in gc.variables if id(v) not in gc_variables]
  for target, source in zip(others, plain.variables):
    target.assign(source)
  for level in '2345':
    np.testing.assert_allclose(gc(x, training=False)[level].numpy(),
                               plain(x, training=False)[level].numpy(),
                               rtol=1e-12, atol=1e-12)


def test_padded_resnet_round_trips_through_its_config():
  backbone = _small_resnet50(True, (64, 64))
  clone = resnet.ResNet.from_config(dict(
      backbone.get_config(),
      input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])))
  assert clone.get_config()['pytorch_padding']
  assert [v.shape for v in clone.variables] == [
      v.shape for v in backbone.variables]


def test_pytorch_padding_refuses_other_stems():
  with pytest.raises(ValueError, match="'v0' stem"):
    resnet.ResNet(model_id=50, pytorch_padding=True, stem_type='v1')


@pytest.mark.parametrize('sizes', [
    [(16, 24), (8, 12), (4, 6), (2, 3)],  # a canvas that is a multiple of 32
    [(13, 21), (7, 11), (4, 6), (2, 3)],  # odd sizes: no exact doubling
])
def test_fpn_matches_mmdetection(float64_policy, sizes):
  del float64_policy
  rng = np.random.default_rng(5)
  features = {str(level): rng.standard_normal((1, h, w, 2 * level))
              for level, (h, w) in zip(range(2, 6), sizes)}
  layer = fpn_lib.FPN(min_level=2, max_level=6, num_filters=5)
  layer(features)
  _randomize(layer, seed=6)
  got = layer(features)
  # pylint: disable=protected-access
  want = ref.fpn(
      [features[str(l)][0] for l in range(2, 6)],
      [(conv.kernel.numpy(), conv.bias.numpy()) for conv in layer._laterals],
      [(conv.kernel.numpy(), conv.bias.numpy()) for conv in layer._post_hoc],
      num_outs=5)
  assert sorted(got) == ['2', '3', '4', '5', '6']
  for level, expected in zip('23456', want):
    np.testing.assert_allclose(got[level].numpy()[0], expected, rtol=1e-12,
                               atol=1e-12)


def test_rpn_head_matches_mmdetection(float64_policy):
  del float64_policy
  rng = np.random.default_rng(7)
  features = {str(l): rng.standard_normal((1, 9 - l, 11 - l, 6))
              for l in range(2, 7)}
  head = heads.RPNHead(num_anchors_per_location=3, num_filters=4)
  head(features)
  _randomize(head, seed=8)
  scores, boxes = head(features)
  # pylint: disable=protected-access
  for level, x in features.items():
    hidden = ref.relu(ref.conv2d(x[0], head._conv.kernel.numpy(),
                                 head._conv.bias.numpy(), padding=1))
    np.testing.assert_allclose(
        scores[level].numpy()[0],
        ref.conv2d(hidden, head._scores.kernel.numpy(),
                   head._scores.bias.numpy()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        boxes[level].numpy()[0],
        ref.conv2d(hidden, head._boxes.kernel.numpy(),
                   head._boxes.bias.numpy()), rtol=1e-12, atol=1e-12)


def _yxyx_to_xyxy(boxes):
  return np.asarray(boxes)[..., [1, 0, 3, 2]]


@pytest.mark.parametrize('stride,size', [(4, (3, 5)), (64, (2, 1))])
def test_anchors_are_mmdetections(stride, size):
  aspect_ratios = [2.0, 1.0, 0.5]  # w/h: mmdetection's h/w [0.5, 1, 2]
  got = anchors.level_anchors(size[0], size[1], stride, 8.0, 1,
                              aspect_ratios).numpy()
  assert got.shape == (size[0], size[1], 12)
  want = ref.anchors(size[0], size[1], stride, ratios=[0.5, 1.0, 2.0],
                     scales=[8.0])
  np.testing.assert_allclose(_yxyx_to_xyxy(got.reshape(-1, 4)), want,
                             rtol=0, atol=1e-5 * stride)
  # The first anchor is wide and centred on the origin (Model Garden's is
  # tall and centred at stride / 2).
  x1, y1, x2, y2 = want[0]
  assert (x1 + x2, y1 + y2) == (0, 0) and x2 - x1 > y2 - y1


def test_multilevel_anchors_use_each_levels_stride():
  got = anchors.multilevel_anchors({'3': (2, 2), '5': (1, 2)}, 8.0, 1, [1.0])
  np.testing.assert_allclose(got['3'].numpy()[0, 1], [-32, -24, 32, 40])
  np.testing.assert_allclose(got['5'].numpy()[0, 1], [-128, -96, 128, 160])


def _mmdet_deltas(deltas):
  """(dy, dx, dh, dw) -> (dx, dy, dw, dh)."""
  return np.asarray(deltas)[..., [1, 0, 3, 2]]


def test_decode_matches_delta2bbox_with_both_clamps():
  rng = np.random.default_rng(9)
  priors = np.array([[10., 20., 50., 100.], [0., 0., 8., 4.],
                     [30., 30., 31., 90.]], np.float32)  # yxyx
  deltas = rng.standard_normal((3, 4)).astype(np.float32)
  deltas[0, 2:] = [9.0, -9.0]  # beyond the clamp, both ways
  got = proposals.decode_and_clip(tf.constant(priors), tf.constant(deltas),
                                  tf.constant([[60.0, 70.0]])).numpy()
  want = ref.delta2bbox(_yxyx_to_xyxy(priors).astype(np.float64),
                        _mmdet_deltas(deltas), (1, 1, 1, 1), (60.0, 70.0))
  np.testing.assert_allclose(_yxyx_to_xyxy(got), want, rtol=1e-6, atol=1e-4)
  assert proposals.DELTA_CLAMP == pytest.approx(math.log(1000 / 16))


def _random_rpn_outputs(rng, sizes, num_anchors=3):
  scores, boxes = {}, {}
  for level, (h, w) in sizes.items():
    scores[level] = rng.standard_normal((2, h, w, num_anchors)) * 2
    boxes[level] = rng.standard_normal((2, h, w, 4 * num_anchors)) * 0.5
  return scores, boxes


@pytest.mark.parametrize('image_shape', [[[60., 90.], [40., 70.]],
                                         [[20., 30.], [12., 9.]]])
def test_proposals_match_predict_by_feat(image_shape):
  """Small images clip many anchors to zero size: mmdetection drops them
  before the NMS (Model Garden keeps them)."""
  rng = np.random.default_rng(10)
  sizes = {'2': (16, 24), '3': (8, 12), '4': (4, 6), '5': (2, 3),
           '6': (1, 2)}
  scores, boxes = _random_rpn_outputs(rng, sizes)
  generator = proposals.ProposalGenerator(
      test_pre_nms_top_k=100, test_nms_iou_threshold=0.7,
      test_num_proposals=150)
  rois, roi_scores = generator(
      {k: tf.constant(v, tf.float32) for k, v in boxes.items()},
      {k: tf.constant(v, tf.float32) for k, v in scores.items()},
      None, tf.constant(image_shape), training=False)
  for image in range(2):
    want = ref.rpn_proposals(
        [scores[l][image].reshape(-1) for l in sizes],
        [_mmdet_deltas(boxes[l][image].reshape(-1, 4)) for l in sizes],
        [ref.anchors(*sizes[l], 2**int(l), [0.5, 1.0, 2.0], [8.0])
         for l in sizes],
        image_shape[image], nms_pre=100, iou_threshold=0.7, max_per_img=150)
    count = len(want)
    got_boxes = _yxyx_to_xyxy(rois.numpy()[image])
    got_scores = roi_scores.numpy()[image]
    assert np.all(got_scores[count:] == 0) and np.all(got_boxes[count:] == 0)
    np.testing.assert_allclose(got_scores[:count], want[:, 4], rtol=1e-5)
    np.testing.assert_allclose(got_boxes[:count], want[:, :4], atol=1e-3)
    size = got_boxes[:count, 2:] - got_boxes[:count, :2]
    assert np.all(size > 0)


@pytest.mark.parametrize('threshold,kept', [(1 / 3, 2), (0.33, 1)])
def test_proposal_nms_suppresses_above_the_threshold_only(threshold, kept):
  """mmcv suppresses at IoU > threshold (Model Garden's NMS at >=).

  One cell, anchors 32 x 32 (aspect 1) and 64 x 16 (aspect 4), both moved
  to centre (50, 50) by exact deltas: [34, 34, 66, 66] and [42, 18, 58,
  82], IoU 512 / 1536 = 1/3 exactly in float32 too.
  """
  scores = tf.constant([[[[2.0, 1.0]]]])
  deltas = tf.constant([[[[50 / 32, 50 / 32, 0.0, 0.0,
                           50 / 16, 50 / 64, 0.0, 0.0]]]])
  generator = proposals.ProposalGenerator(
      min_level=2, max_level=2, aspect_ratios=[1.0, 4.0],
      test_nms_iou_threshold=threshold, test_num_proposals=4)
  rois, _ = generator({'2': deltas}, {'2': scores}, None,
                      tf.constant([[100.0, 100.0]]), training=False)
  rois = rois.numpy()[0]
  np.testing.assert_allclose(rois[0], [34, 34, 66, 66])
  assert np.count_nonzero(rois.any(axis=1)) == kept


def test_box_head_matches_mmdetection(float64_policy):
  del float64_policy
  rng = np.random.default_rng(11)
  features = rng.standard_normal((2, 3, 4, 4, 5))
  head = heads.Shared2FCBBoxHead(num_classes=4, fc_dims=6)
  head(features)
  _randomize(head, seed=12)
  classes, boxes = head(features)
  # pylint: disable=protected-access
  want_classes, want_boxes = ref.shared_fc_box_head(
      features.reshape(6, 4, 4, 5),
      [(fc.kernel.numpy(), fc.bias.numpy()) for fc in head._fcs],
      (head._classifier.kernel.numpy(), head._classifier.bias.numpy()),
      (head._box_regressor.kernel.numpy(), head._box_regressor.bias.numpy()))
  np.testing.assert_allclose(classes.numpy().reshape(6, 4), want_classes,
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(boxes.numpy().reshape(6, 16), want_boxes,
                             rtol=1e-12, atol=1e-12)
  assert not [w for w in head.weights if 'norm' in w.name]


def test_mask_head_matches_mmdetection(float64_policy):
  del float64_policy
  rng = np.random.default_rng(13)
  features = rng.standard_normal((1, 3, 5, 5, 4))
  roi_classes = np.array([[2, 0, 3]])
  head = heads.FCNMaskHead(num_classes=4, num_convs=2, num_filters=3)
  head([features, roi_classes])
  _randomize(head, seed=14)
  got = head([features, roi_classes]).numpy()[0]
  # pylint: disable=protected-access
  want = ref.fcn_mask_head(
      features[0],
      [(c.kernel.numpy(), c.bias.numpy()) for c in head._convs],
      (head._deconv.kernel.numpy(), head._deconv.bias.numpy()),
      (head._mask_regressor.kernel.numpy(),
       head._mask_regressor.bias.numpy()), roi_classes[0])
  assert got.shape == (3, 10, 10)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_box_head_without_regression_only_classifies(float64_policy):
  """mmdetection's `with_reg=False` (Grid R-CNN): no box FC and no
  variable of one; the deltas are zeros, the logits those of the same FCs
  and classifier."""
  del float64_policy
  rng = np.random.default_rng(21)
  features = rng.standard_normal((2, 3, 4, 4, 5))
  head = heads.Shared2FCBBoxHead(num_classes=4, fc_dims=6, with_reg=False)
  head(features)
  _randomize(head, seed=22)
  classes, boxes = head(features)
  assert not [w for w in head.weights if 'detection-boxes' in w.name]
  assert len(head.weights) == 6  # two FCs and the classifier
  # pylint: disable=protected-access
  want_classes, _ = ref.shared_fc_box_head(
      features.reshape(6, 4, 4, 5),
      [(fc.kernel.numpy(), fc.bias.numpy()) for fc in head._fcs],
      (head._classifier.kernel.numpy(), head._classifier.bias.numpy()),
      (np.zeros((6, 0)), np.zeros(0)))
  np.testing.assert_allclose(classes.numpy().reshape(6, 4), want_classes,
                             rtol=1e-12, atol=1e-12)
  assert boxes.shape == (2, 3, 16) and not np.any(boxes.numpy())


def _detect(generator, boxes, scores, image_shape):
  """`generator` on class-agnostic RoIs `[N, 4]` (zero deltas) with
  probabilities `[N, K]` (background excluded)."""
  probabilities = np.concatenate(
      [1.0 - scores.sum(1, keepdims=True), scores], 1)
  out = generator(tf.zeros([1, len(boxes), 4 * probabilities.shape[1]]),
                  tf.constant(np.log(probabilities)[None], tf.float32),
                  tf.constant(boxes[None], tf.float32),
                  tf.constant([image_shape], tf.float32), [10., 10., 5., 5.])
  count = int(out['num_detections'][0])
  return (out['detection_boxes'].numpy()[0, :count],
          out['detection_scores'].numpy()[0, :count],
          out['detection_classes'].numpy()[0, :count] - 1)


def test_detection_nms_is_greedy_below_an_iou_of_a_half():
  """Grid R-CNN's NMS IoU is 0.3. A (0.9) overlaps B (0.8) by IoU 0.4, B
  overlaps C (0.7) by 0.4, A and C are apart: a greedy NMS keeps A and C.
  Model Garden's 'v2' NMS drops C too: its self-suppression compares IoUs
  with 0.5, not the threshold."""
  boxes = np.array([[0., 0., 10., 10.], [0., 4.2857143, 10., 14.2857143],
                    [0., 8.5714286, 10., 18.5714286]])  # IoU(A, B) = 0.4
  scores = np.array([[0.9], [0.8], [0.7]])
  config = dict(pre_nms_score_threshold=0.05, nms_iou_threshold=0.3,
                max_num_detections=10)
  _, got, _ = _detect(proposals.DetectionGenerator(**config), boxes, scores,
                      [50., 50.])
  np.testing.assert_allclose(got, [0.9, 0.7], rtol=1e-6)
  _, stock, _ = _detect(detection_generator.DetectionGenerator(**config),
                        boxes, scores, [50., 50.])
  np.testing.assert_allclose(stock, [0.9], rtol=1e-6)


@pytest.mark.parametrize('iou_threshold', [0.3, 0.5, 0.7])
def test_detections_are_mmdetections_multiclass_nms(iou_threshold):
  """Random overlapping RoIs, 3 classes, class-agnostic boxes (Grid
  R-CNN's): the same detections as mmdetection's `multiclass_nms`, in its
  order, cut at `max_per_img`."""
  rng = np.random.default_rng(int(iou_threshold * 10))
  corners = rng.integers(0, 40, (30, 2)).astype(np.float64)
  sizes = rng.integers(4, 30, (30, 2)).astype(np.float64)
  boxes = np.concatenate([corners, corners + sizes], 1)  # yxyx, inside
  scores = rng.dirichlet(np.ones(4), 30)[:, 1:].astype(np.float32)
  got_boxes, got_scores, got_classes = _detect(
      proposals.DetectionGenerator(pre_nms_score_threshold=0.05,
                                   nms_iou_threshold=iou_threshold,
                                   max_num_detections=12),
      boxes, scores.astype(np.float64), [80., 80.])
  # mmdetection's order: boxes x1y1x2y2, one box for every class.
  want_boxes, want_scores, want_classes = ref.multiclass_nms(
      np.repeat(boxes[:, None, [1, 0, 3, 2]], 3, 1), scores, 0.05,
      iou_threshold, 12)
  assert len(want_scores) == 12  # the cut is reached
  np.testing.assert_array_equal(got_classes, want_classes)
  np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5)
  np.testing.assert_array_equal(got_boxes[:, [1, 0, 3, 2]], want_boxes)


def test_padding_rois_detect_nothing():
  generator = proposals.DetectionGenerator(
      pre_nms_score_threshold=0.05, max_num_detections=10)
  rois = tf.constant([[[0., 0., 20., 20.], [0., 0., 0., 0.]]])
  logits = tf.constant([[[0., 5.], [0., 5.]]])  # class 1 likely for both
  deltas = tf.zeros([1, 2, 8])
  out = generator(deltas, logits, rois, tf.constant([[50., 50.]]),
                  [10., 10., 5., 5.])
  assert int(out['num_detections'][0]) == 1
  np.testing.assert_allclose(out['detection_boxes'][0, 0], [0, 0, 20, 20])


def test_detection_deltas_are_clamped_from_below():
  generator = proposals.DetectionGenerator(
      pre_nms_score_threshold=0.05, max_num_detections=10)
  rois = tf.constant([[[0., 0., 40., 40.]]])
  deltas = tf.constant([[[0., 0., 0., 0., 0., 0., -100., -100.]]])
  out = generator(deltas, tf.constant([[[0., 5.]]]), rois,
                  tf.constant([[50., 50.]]), [10., 10., 5., 5.])
  size = float(out['detection_boxes'][0, 0, 2] -
               out['detection_boxes'][0, 0, 0])
  # exp(-log(1000 / 16)) * 40 px = 0.64 px (Model Garden: 0).
  assert size == pytest.approx(40 * 16 / 1000, rel=1e-5)



def _grid_state_dict(rng, in_channels, num_convs, point_channels,
                     prefix='roi_head.grid_head.'):
  """A GridHead state dict in mmdetection's names and torch's layouts,
  float32-representable (the converter reads float32)."""
  channels = 9 * point_channels
  shapes = {}
  for k in range(num_convs):
    shapes[f'convs.{k}.conv.weight'] = (
        channels, in_channels if k == 0 else channels, 3, 3)
    for name in ('conv.bias', 'gn.weight', 'gn.bias'):
      shapes[f'convs.{k}.{name}'] = (channels,)
  for order in ('forder_trans', 'sorder_trans'):
    for i, neighbours in enumerate(ref_grid.mmdet_neighbours()):
      for j in range(len(neighbours)):
        edge = f'{order}.{i}.{j}.'
        shapes.update({edge + '0.weight': (point_channels, 1, 5, 5),
                       edge + '0.bias': (point_channels,),
                       edge + '1.weight': (point_channels, point_channels,
                                           1, 1),
                       edge + '1.bias': (point_channels,)})
  shapes.update({'deconv1.weight': (channels, point_channels, 4, 4),
                 'deconv1.bias': (channels,), 'norm1.weight': (channels,),
                 'norm1.bias': (channels,), 'deconv2.weight': (channels, 1, 4,
                                                               4),
                 'deconv2.bias': (9,)})
  state = {}
  for name, shape in shapes.items():
    value = (rng.uniform(0.5, 1.5, shape) if name.endswith(('gn.weight',
                                                            'norm1.weight'))
             else rng.standard_normal(shape) * 0.4)
    state[prefix + name] = value.astype(np.float32).astype(np.float64)
  return state


def test_grid_head_loads_mmdetections_state_dict(float64_policy):
  """mmdetection's GridHead from its state dict (grouped transposed convs
  whole, transitions per edge, GroupNorms) through the converter: the
  fused and unfused heatmaps of mmdetection's forward."""
  del float64_policy
  rng = np.random.default_rng(31)
  head = GridHead(num_convs=2, point_channels=3, norm_groups=9)
  features = rng.standard_normal((2, 14, 14, 5))
  head(features)
  state = _grid_state_dict(rng, in_channels=5, num_convs=2, point_channels=3)
  tensors = mmdet_state_dict.StateDict(state)
  assign = mmdet_state_dict._Assigner()  # pylint: disable=protected-access
  mmdet_state_dict._load_grid_head(head, tensors, assign)  # pylint: disable=protected-access
  assert not tensors.untaken()
  assert {id(v) for v in head.variables} == assign.assigned
  got = head(features, training=True)
  for roi in range(2):
    want = ref_grid.grid_head_from_state_dict(
        features[roi].transpose(2, 0, 1), state, num_convs=2, norm_groups=9)
    for key in ('fused', 'unfused'):
      np.testing.assert_allclose(got[key].numpy()[roi].transpose(2, 0, 1),
                                 want[key], rtol=1e-10, atol=1e-10)


def test_grid_rcnn_builds_and_runs_in_the_mmdetection_layout():
  """The grid model of the layout: a box head without regression, the
  single-level 14x14 grid extractor, images of any size; the grid's vote
  replaces the boxes of the detections, padding stays zero."""
  config = mmdet_stages.model_config('grid_rcnn')
  model = builder.build_model(
      config, tf_keras.layers.InputSpec(shape=[None, 96, 160, 3]))
  assert isinstance(model, mmdet_model.GridRCNNModel)
  (box_head,) = model.detection_head
  assert not [w for w in box_head.weights if 'detection-boxes' in w.name]
  extractor = model.grid_roi_aligner.get_config()
  assert (extractor['crop_size'], extractor['level_selection'],
          extractor['sampling_ratio']) == (14, 'heuristic', 0)
  images = tf.random.stateless_uniform([1, 96, 160, 3], [3, 4])
  for size, image_shape in (((96, 160), [90., 130.]), ((64, 128), [64., 100.])):
    outputs = model(images[:, :size[0], :size[1]],
                    image_shape=tf.constant([image_shape]), training=False)
    count = int(outputs['num_detections'][0])
    refined = outputs['detection_boxes'].numpy()[0]
    before = outputs['detection_boxes_before_grid'].numpy()[0]
    assert count > 0
    assert np.abs(refined[:count] - before[:count]).max() > 0
    assert not np.any(refined[count:]) and not np.any(before[count:])


def test_a_checkpoint_restores_the_same_detector(tmp_path):
  """Every part checkpoints (a dict of layers keyed by int would not) and
  restores to the same outputs; images of other sizes go through."""
  config = mmdet_stages.model_config('gcnet_mask_rcnn_groie')
  spec = tf_keras.layers.InputSpec(shape=[None, 96, 160, 3])
  model = builder.build_model(config, spec)
  _randomize(model, seed=15)
  path = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
  restored = builder.build_model(config, spec)
  tf.train.Checkpoint(model=restored).read(path).assert_consumed()
  images = tf.random.stateless_uniform([1, 96, 160, 3], [1, 2])
  for size, image_shape in (((96, 160), [90., 130.]), ((64, 128), [64., 100.])):
    x = images[:, :size[0], :size[1]]
    want = model(x, image_shape=tf.constant([image_shape]), training=False)
    got = restored(x, image_shape=tf.constant([image_shape]), training=False)
    np.testing.assert_array_equal(got['detection_boxes'].numpy(),
                                  want['detection_boxes'].numpy())



def test_test_resize_sizes_are_mmcvs():
  """mmcv's imrescale sizes and mmdetection's scale factors for 42 image
  sizes (COCO's typical ones, odd, tiny and extreme aspect ratios)."""
  with np.load(f'{mmdet_stages.FIXTURES}/resize.npz') as data:
    fixture = dict(data)
  for size, want, factors in zip(fixture['sizes'], fixture['new_sizes'],
                                 fixture['scale_factors']):
    got, got_factors = mmdetection_resize.rescaled_size(
        tf.constant(size), (1333, 800))
    np.testing.assert_array_equal(got.numpy(), want, err_msg=str(size))
    # mmdetection stores (w, h) factors; Model Garden's record (y, x).
    np.testing.assert_allclose(got_factors.numpy(), factors[::-1],
                               rtol=1e-7)


def test_test_image_is_mmdetections_input():
  """No resize (scale = the image's size): the canvas is mmdetection's
  normalised, zero-padded input, to float32 rounding."""
  fixture = mmdet_stages.load_fixture('mask_rcnn')
  image = fixture['in/image_uint8']
  canvas, info = mmdetection_resize.test_image(tf.constant(image),
                                               (130, 90))
  np.testing.assert_allclose(canvas.numpy(), fixture['in/image'][0],
                             rtol=0, atol=1e-5)
  np.testing.assert_array_equal(
      info.numpy(), [[90, 130], [90, 130], [1, 1], [0, 0]])


def test_test_image_resizes_and_pads_as_mmdetection():
  image = np.random.default_rng(16).integers(0, 256, (427, 640, 3),
                                             dtype=np.uint8)
  canvas, info = mmdetection_resize.test_image(tf.constant(image),
                                               (1333, 800))
  assert canvas.shape == (800, 1216, 3)  # 800 x 1199 on a multiple of 32
  np.testing.assert_array_equal(canvas.numpy()[:, 1199:], 0)
  np.testing.assert_allclose(info.numpy()[:2], [[427, 640], [800, 1199]])
  # Pixels: bilinear with half-pixel centres on integers, rounded (the
  # grey levels mmdetection's OpenCV resize gives, up to its rounding).
  resized = (canvas.numpy()[:800, :1199] * np.array(mmdetection_resize.STD) +
             np.array(mmdetection_resize.MEAN))
  np.testing.assert_allclose(resized, np.round(resized), atol=1e-3)
  want = tf.image.resize(image.astype(np.float32), [800, 1199]).numpy()
  assert np.abs(resized - want).max() <= 0.5 + 1e-3


def test_rpn_targets_are_made_on_mmdetections_anchors():
  """A ground-truth box equal to one of mmdetection's anchors is that
  anchor's positive, with a zero regression target; the clip frame becomes
  the image's extent."""
  from official.vision.ops import anchor as mg_anchor  # pylint: disable=g-import-not-at-top
  level_anchors = mmdetection_targets.canvas_anchors(64, 96, 2, 6, 8.0, 1,
                                                     [2.0, 1.0, 0.5])
  target = level_anchors['3'][2, 5, 4:8]  # cell (2, 5), the square anchor
  np.testing.assert_allclose(target, [-16, 8, 48, 72])  # centre (16, 40)
  labels = {
      'image_info': tf.constant([[[48., 72.], [64., 96.], [1., 1.],
                                  [0., 0.]]]),
      'gt_boxes': tf.concat([target[None, None], -tf.ones([1, 2, 4])], 1),
      'gt_classes': tf.constant([[3, -1, -1]]),
  }
  _, relabelled = mmdetection_targets.relabel(
      tf.zeros([1, 64, 96, 3]), labels, training=True, min_level=2,
      max_level=6, anchor_size=8.0, num_scales=1,
      aspect_ratios=[2.0, 1.0, 0.5],
      labeler=mg_anchor.RpnAnchorLabeler(0.7, 0.3, 256, 0.5))
  scores = relabelled['rpn_score_targets']['3'].numpy()[0]
  assert scores[2, 5, 1] == 1
  # Zero only on mmdetection's anchor: Model Garden's is centred half a
  # stride (4 px) away.
  np.testing.assert_allclose(
      relabelled['rpn_box_targets']['3'].numpy()[0, 2, 5, 4:8], 0, atol=1e-6)
  np.testing.assert_allclose(relabelled['image_info'].numpy()[0, 1],
                             [48, 72])


def test_evaluation_resizes_each_image_on_its_own_canvas(tiny_shapes):
  """The evaluation input of the mmdetection layout: mmdetection's test
  resize, the resized size as the clip frame; on a user's data, one image
  per replica or a ConfigError saying so."""
  config = tiny_own_data_experiment(
      tiny_shapes, model={'layout': 'mmdetection', 'test_scale': [200, 160]})
  task = task_factory.get_task(config.task)
  with pytest.raises(ConfigError, match='global_batch_size to the number of '
                     'replicas'):
    task.build_inputs(config.task.validation_data)
  config.override({'task': {'validation_data': {'global_batch_size': 1}}})
  images, labels = next(iter(task.build_inputs(config.task.validation_data)))
  # 128 x 128 scaled by min(200 / 128, 160 / 128): 160 x 160, a canvas of
  # 160 (a multiple of 32).
  assert images.shape == (1, 160, 160, 3)
  np.testing.assert_allclose(labels['image_info'].numpy()[0],
                             [[128, 128], [160, 160], [1.25, 1.25], [0, 0]])


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
