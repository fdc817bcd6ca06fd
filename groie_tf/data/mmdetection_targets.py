"""Model Garden's input batches, relabelled for the mmdetection layout.

Model Garden's parser makes two things the mmdetection layout does
otherwise:

- `image_info[:, 1]`, the `image_shape` the task gives the model (the
  frame proposals and detections are clipped to), is the padded output
  size; mmdetection clips to the image (`img_shape`). Here it becomes the
  image's extent in the canvas: the scaled size less the crop offset,
  within the output size.
- the RPN targets of training are computed on Model Garden's anchors
  (centred half a stride off mmdetection's): here they are computed again
  on mmdetection's anchors (`groie_tf.ops.anchors`), with Model Garden's
  labeler and the parser's thresholds and sampling. (The anchors the
  parser passes on are left: the layout's proposal generator makes its
  own.)
"""

import functools
from typing import Any, Dict, Sequence, Tuple

import tensorflow as tf
from official.vision.ops import anchor

from groie_tf.ops import anchors as anchors_lib


def image_extent(image_info: tf.Tensor) -> tf.Tensor:
  """`[B, 2]` (height, width) of each image inside its canvas.

  Args:
    image_info: `[B, 4, 2]` Model Garden's record: original size, output
      size, scale, crop offset.
  """
  scaled = tf.round(image_info[:, 0] * image_info[:, 2])
  return tf.minimum(scaled - image_info[:, 3], image_info[:, 1])


def canvas_anchors(height: int, width: int, min_level: int, max_level: int,
                   anchor_size: float, num_scales: int,
                   aspect_ratios: Sequence[float]) -> Dict[str, tf.Tensor]:
  """mmdetection's anchors of a `height x width` canvas: level l has
  `ceil(size / 2**l)` cells per axis, the size of the layout's maps."""
  sizes = {}
  for level in range(min_level, max_level + 1):
    sizes[str(level)] = (-(-height // 2**level), -(-width // 2**level))
  return anchors_lib.multilevel_anchors(sizes, anchor_size, num_scales,
                                        aspect_ratios)


def relabel(images: tf.Tensor, labels: Dict[str, Any], *, training: bool,
            min_level: int, max_level: int, anchor_size: float,
            num_scales: int, aspect_ratios: Sequence[float],
            labeler: anchor.RpnAnchorLabeler) -> Tuple[tf.Tensor,
                                                       Dict[str, Any]]:
  """One batch `(images, labels)` of Model Garden's Mask R-CNN parser,
  relabelled (module doc). Training needs the canvas size to be static."""
  labels = dict(labels)
  info = labels['image_info']
  extent = image_extent(info)
  labels['image_info'] = tf.concat(
      [info[:, :1], extent[:, None], info[:, 2:]], axis=1)
  if training:
    level_anchors = canvas_anchors(images.shape[1], images.shape[2],
                                   min_level, max_level, anchor_size,
                                   num_scales, aspect_ratios)

    def targets(inputs):
      boxes, classes = inputs
      valid = classes >= 0  # the parser pads with -1
      return labeler.label_anchors(
          level_anchors, tf.boolean_mask(boxes, valid),
          tf.cast(tf.boolean_mask(classes, valid)[:, None], tf.float32))

    signature = ({level: tf.TensorSpec(boxes.shape[:2] + [boxes.shape[2] // 4],
                                       tf.int32)
                  for level, boxes in level_anchors.items()},
                 {level: tf.TensorSpec(boxes.shape, tf.float32)
                  for level, boxes in level_anchors.items()})
    scores, box_targets = tf.map_fn(
        targets, (labels['gt_boxes'], labels['gt_classes']),
        fn_output_signature=signature)
    labels['rpn_score_targets'] = scores
    labels['rpn_box_targets'] = box_targets
  return images, labels


def relabel_fn(training: bool, model_config, parser_config):
  """`relabel` bound to a model config's anchors and a data config's RPN
  labeler settings, for `tf.data.Dataset.map`."""
  anchor_config = model_config.anchor
  return functools.partial(
      relabel, training=training, min_level=model_config.min_level,
      max_level=model_config.max_level,
      anchor_size=anchor_config.anchor_size,
      num_scales=anchor_config.num_scales,
      aspect_ratios=list(anchor_config.aspect_ratios),
      labeler=anchor.RpnAnchorLabeler(
          parser_config.rpn_match_threshold,
          parser_config.rpn_unmatched_threshold,
          parser_config.rpn_batch_size_per_im,
          parser_config.rpn_fg_fraction))
