"""mmdetection's RPN proposals and the detection step around its RoIs.

`ProposalGenerator` replaces Model Garden's `MultilevelROIGenerator`;
`DetectionGenerator` wraps Model Garden's for the two things the proposals
change downstream, with mmdetection's `multiclass_nms` in place of its
NMS.
"""

import math
from typing import Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras
from official.vision.modeling.layers import detection_generator

from groie_tf.ops import anchors

# mmdetection's DeltaXYWHBBoxCoder: log-size deltas clamped to
# +-|log(16 / 1000)| on both sides (Model Garden clamps only from above).
DELTA_CLAMP = abs(math.log(16 / 1000))


def decode_and_clip(anchor_boxes: tf.Tensor, deltas: tf.Tensor,
                    image_shape: tf.Tensor) -> tf.Tensor:
  """mmdetection's `delta2bbox` (means 0, stds 1) in Model Garden's order.

  Args:
    anchor_boxes: float32 `[..., 4]` `[y1, x1, y2, x2]`.
    deltas: float32 `[..., 4]` `(dy, dx, dh, dw)`.
    image_shape: float32 `[..., 2]` (height, width), broadcastable: the
      frame boxes are clipped to.

  Returns:
    float32 `[..., 4]` boxes, in mmdetection's float32 operation order.
  """
  low, high = anchor_boxes[..., :2], anchor_boxes[..., 2:]
  centre = (low + high) * 0.5
  size = high - low
  shift = size * deltas[..., :2]
  log_scale = tf.clip_by_value(deltas[..., 2:], -DELTA_CLAMP, DELTA_CLAMP)
  centre = centre + shift
  size = size * tf.exp(log_scale)
  boxes = tf.concat([centre - size * 0.5, centre + size * 0.5], axis=-1)
  limit = tf.tile(image_shape, [1] * (image_shape.shape.rank - 1) + [2])
  return tf.clip_by_value(boxes, 0.0, limit)


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class ProposalGenerator(tf_keras.layers.Layer):
  """mmdetection's `RPNHead.predict_by_feat` (3.x), batched.

  Per image and level: sigmoid, the `pre_nms_top_k` best anchors, decoded
  (`decode_and_clip`) on mmdetection's anchors (`groie_tf.ops.anchors`,
  made from the score maps' sizes: the `anchor_boxes` Model Garden passes
  are ignored), boxes of zero width or height dropped, NMS (IoU >
  `nms_iou_threshold` suppresses, as mmcv's); then the survivors of all
  levels by score, the first `num_proposals`, padded with zero boxes of
  score 0 (a zero box is never a proposal otherwise, so
  `DetectionGenerator` can tell padding from proposals).

  Model Garden's generator keeps zero-size boxes (291 of 525 proposals in
  one probe), suppresses at IoU >= the threshold, clamps log-size deltas
  only from above, and clips to the frame it is given.

  Args:
    min_level, max_level: the levels proposed from.
    anchor_size, num_scales, aspect_ratios: Model Garden's anchor config
      (aspect ratio w/h; mmdetection's RPN is `8, 1, [2.0, 1.0, 0.5]`).
    pre_nms_top_k, nms_iou_threshold, num_proposals: training values
      (mmdetection: 2000, 0.7, 1000).
    test_pre_nms_top_k, test_nms_iou_threshold, test_num_proposals:
      inference values (1000, 0.7, 1000).
    **kwargs: standard Keras layer arguments.

  Call arguments:
    raw_boxes: `{level: [B, H, W, 4A]}` deltas (dy, dx, dh, dw).
    raw_scores: `{level: [B, H, W, A]}` logits.
    anchor_boxes: ignored (Model Garden's convention).
    image_shape: `[B, 2]` (height, width) of each image's content, the
      frame proposals are clipped to.
    training: selects the training or inference values.

  Returns:
    `(rois, scores)`: float32 `[B, num_proposals, 4]` `[y1, x1, y2, x2]` and
    `[B, num_proposals]`, by decreasing score.
  """

  def __init__(self, min_level: int = 2, max_level: int = 6,
               anchor_size: float = 8.0, num_scales: int = 1,
               aspect_ratios: Sequence[float] = (2.0, 1.0, 0.5),
               pre_nms_top_k: int = 2000, nms_iou_threshold: float = 0.7,
               num_proposals: int = 1000, test_pre_nms_top_k: int = 1000,
               test_nms_iou_threshold: float = 0.7,
               test_num_proposals: int = 1000, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(
        min_level=min_level, max_level=max_level, anchor_size=anchor_size,
        num_scales=num_scales, aspect_ratios=list(aspect_ratios),
        pre_nms_top_k=pre_nms_top_k, nms_iou_threshold=nms_iou_threshold,
        num_proposals=num_proposals, test_pre_nms_top_k=test_pre_nms_top_k,
        test_nms_iou_threshold=test_nms_iou_threshold,
        test_num_proposals=test_num_proposals)

  def call(self, raw_boxes: Mapping[str, tf.Tensor],
           raw_scores: Mapping[str, tf.Tensor], anchor_boxes=None,
           image_shape: Optional[tf.Tensor] = None,
           training: Optional[bool] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    del anchor_boxes  # Model Garden's, centred half a stride away
    config = self._config
    prefix = '' if training else 'test_'
    pre_nms_top_k = config[prefix + 'pre_nms_top_k']
    iou_threshold = config[prefix + 'nms_iou_threshold']
    num_proposals = config[prefix + 'num_proposals']
    image_shape = tf.cast(image_shape, tf.float32)[:, None, :]  # [B, 1, 2]

    level_boxes, level_scores = [], []
    for level in range(config['min_level'], config['max_level'] + 1):
      scores = tf.cast(raw_scores[str(level)], tf.float32)
      deltas = tf.cast(raw_boxes[str(level)], tf.float32)
      shape = tf.shape(scores)
      level_anchors = anchors.level_anchors(
          shape[1], shape[2], 2**level, config['anchor_size'],
          config['num_scales'], config['aspect_ratios'])
      # (H, W, A) order, mmdetection's.
      scores = tf.reshape(tf.sigmoid(scores), [shape[0], -1])
      deltas = tf.reshape(deltas, [shape[0], -1, 4])
      level_anchors = tf.reshape(level_anchors, [-1, 4])
      k = tf.minimum(pre_nms_top_k, tf.shape(scores)[1])
      scores, indices = tf.math.top_k(scores, k)  # [B, k]
      boxes = decode_and_clip(tf.gather(level_anchors, indices),
                              tf.gather(deltas, indices, batch_dims=1),
                              image_shape)
      level_boxes.append(boxes)
      level_scores.append(scores)

    def propose(inputs):
      """One image: per-level NMS of the non-empty boxes, then the best."""
      boxes_per_level, scores_per_level = inputs
      kept_boxes, kept_scores = [], []
      for boxes, scores in zip(boxes_per_level, scores_per_level):
        size = boxes[:, 2:] - boxes[:, :2]
        valid = tf.reduce_all(size > 0.0, axis=1)
        # Sigmoid scores are >= 0: a score of -1 is below the threshold.
        keep = tf.image.non_max_suppression(
            boxes, tf.where(valid, scores, -1.0), tf.shape(boxes)[0],
            iou_threshold=iou_threshold, score_threshold=-0.5)
        kept_boxes.append(tf.gather(boxes, keep))
        kept_scores.append(tf.gather(scores, keep))
      boxes = tf.concat(kept_boxes, 0)
      scores = tf.concat(kept_scores, 0)
      scores, best = tf.math.top_k(
          scores, tf.minimum(num_proposals, tf.shape(scores)[0]))
      padding = num_proposals - tf.shape(scores)[0]
      return (tf.pad(tf.gather(boxes, best), [[0, padding], [0, 0]]),
              tf.pad(scores, [[0, padding]]))

    rois, scores = tf.map_fn(
        propose, (level_boxes, level_scores),
        fn_output_signature=(tf.TensorSpec([num_proposals, 4], tf.float32),
                             tf.TensorSpec([num_proposals], tf.float32)))
    return rois, scores

  def get_config(self):
    return dict(super().get_config(), **self._config)


def multiclass_nms(boxes: tf.Tensor, scores: tf.Tensor, score_threshold: float,
                   iou_threshold: float,
                   max_num_detections: int) -> Tuple[tf.Tensor, ...]:
  """mmdetection's `multiclass_nms` on one image (`batched_nms` of mmcv).

  The (RoI, class) pairs scoring above `score_threshold` go through one
  greedy NMS (IoU > `iou_threshold` suppresses), each box moved by its
  class index times (the largest coordinate of those pairs + 1), mmcv's
  offsets that keep the classes apart (in float32, as mmcv adds them:
  their rounding is part of its IoUs); the first `max_num_detections` by
  score are kept.

  Model Garden's NMS ('v2') does not implement this for thresholds below
  0.5: its tile's self-suppression compares IoUs with a fixed 0.5 instead
  of the threshold (at Grid R-CNN's 0.3 it drops boxes a greedy NMS keeps:
  `tests/test_mmdetection_layout.py`).

  Args:
    boxes: `[N, K, 4]` `[y1, x1, y2, x2]` decoded boxes of the K classes
      (background excluded).
    scores: `[N, K]` their probabilities.
    score_threshold, iou_threshold, max_num_detections: mmdetection's
      `score_thr`, `nms.iou_threshold` and `max_per_img`.

  Returns:
    `(boxes, scores, classes, count)`: `[max_num_detections, 4]`,
    `[max_num_detections]`, `[max_num_detections]` int32 class index from
    0 (zero-padded) and the int32 number of detections.
  """
  classes = tf.reshape(
      tf.broadcast_to(tf.range(scores.shape[-1]), tf.shape(scores)), [-1])
  boxes = tf.reshape(boxes, [-1, 4])
  scores = tf.reshape(scores, [-1])
  valid = scores > score_threshold
  # Boxes are clipped to the image, so >= 0: the 0 of the pairs left out
  # is never the largest coordinate unless every pair is left out.
  largest = tf.reduce_max(tf.where(valid[:, None], boxes, 0.0))
  offsets = tf.cast(classes, boxes.dtype) * (largest + 1.0)
  keep = tf.image.non_max_suppression(
      boxes + offsets[:, None], scores, max_num_detections,
      iou_threshold=iou_threshold, score_threshold=score_threshold)
  count = tf.size(keep)
  padding = max_num_detections - count
  return (tf.pad(tf.gather(boxes, keep), [[0, padding], [0, 0]]),
          tf.pad(tf.gather(scores, keep), [[0, padding]]),
          tf.pad(tf.gather(classes, keep), [[0, padding]]), count)


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class DetectionGenerator(detection_generator.DetectionGenerator):
  """Model Garden's detection step with mmdetection's rules.

  - Padding RoIs (zero boxes: `ProposalGenerator` never proposes one)
    detect nothing: their logits become pure background. Model Garden
    would decode them into detections at the origin.
  - Log-size deltas are clamped from below too (mmdetection's
    `delta2bbox`), by `DELTA_CLAMP` times the regression weight.
  - The NMS is mmdetection's `multiclass_nms` (`multiclass_nms` above):
    no per-class top-k before it (`pre_nms_top_k` is unused).

  Model Garden's: softmax, class-specific decoding and clipping to
  `image_shape` (its generator with `apply_nms` false).
  """

  def __call__(self, raw_boxes, raw_scores, anchor_boxes, image_shape,
               regression_weights=None, bbox_per_class=True):
    padding = tf.reduce_all(tf.equal(anchor_boxes, 0.0), axis=-1)  # [B, N]
    num_classes = raw_scores.shape[-1]
    background_only = tf.constant([0.0] + [-1e4] * (num_classes - 1),
                                  raw_scores.dtype)
    raw_scores = tf.where(padding[..., None], background_only, raw_scores)
    weights = regression_weights or [1.0, 1.0, 1.0, 1.0]
    lower = tf.constant([-math.inf, -math.inf] +
                        [-DELTA_CLAMP * w for w in weights[2:]],
                        raw_boxes.dtype)
    boxes_shape = tf.shape(raw_boxes)
    raw_boxes = tf.reshape(
        tf.maximum(tf.reshape(raw_boxes, [boxes_shape[0], boxes_shape[1], -1,
                                          4]), lower), boxes_shape)
    config = self.get_config()
    # Made here, not kept: an attribute would be a new checkpoint node.
    decoder = detection_generator.DetectionGenerator(
        **dict(config, apply_nms=False))
    decoded = decoder(raw_boxes, raw_scores, anchor_boxes, image_shape,
                      regression_weights, bbox_per_class)
    scores = tf.cast(decoded['decoded_box_scores'], tf.float32)  # [B, N, K]
    # [B, N, K or 1, 4]: a class-agnostic box serves every class.
    boxes = (tf.cast(decoded['decoded_boxes'], tf.float32) +
             tf.zeros_like(scores)[..., None])
    size = config['max_num_detections']
    boxes, scores, classes, count = tf.map_fn(
        lambda inputs: multiclass_nms(
            inputs[0], inputs[1], config['pre_nms_score_threshold'],
            config['nms_iou_threshold'], size),
        (boxes, scores),
        fn_output_signature=(tf.TensorSpec([size, 4], tf.float32),
                             tf.TensorSpec([size], tf.float32),
                             tf.TensorSpec([size], tf.int32),
                             tf.TensorSpec([], tf.int32)))
    # Classes from 1: column 0 is the background.
    return {'detection_boxes': boxes, 'detection_scores': scores,
            'detection_classes': classes + 1, 'num_detections': count}
