"""Grid R-CNN (Plus) on Model Garden's Mask R-CNN model, without a fork.

`GridRCNNModel` subclasses Model Garden's `MaskRCNNModel` and changes two
steps, as mmdetection's `GridRoIHead` does:

- the box head only classifies: its box deltas are zeroed, so Model
  Garden's detection generator keeps the proposals (class-agnostic boxes:
  per-class NMS over the proposals, mmdetection's `with_reg=False`);
- the grid branch: in training, up to `max_num_grid` positive RoIs of the
  replica's batch, jittered, are pooled (14x14) and the GridHead's fused
  and unfused heatmaps are returned with their targets; at inference, the
  final detections are pooled and their boxes replaced by the grid
  points' vote (the boxes before it stay in `detection_boxes_before_grid`).
"""

from typing import Any, Mapping

import tensorflow as tf
import tf_keras
from official.vision.modeling import maskrcnn_model

from groie_tf.layers import GRoIE
from groie_tf.ops import grid_points


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class GridRCNNModel(maskrcnn_model.MaskRCNNModel):
  """Model Garden's two-stage detector with Grid R-CNN Plus's grid branch.

  From X. Lu, B. Li, Y. Yue, Q. Li, J. Yan, "Grid R-CNN Plus: Faster and
  Better", arXiv 1906.05688 (2019); the Grid R-CNN rows of GRoIE's Table V.

  Args:
    grid_head: a `groie_tf.layers.GridHead`.
    grid_roi_aligner: pools `[B, N, 14, 14, C]` features (GRoIE or Model
      Garden's aligner with crop 14).
    max_num_grid: positive RoIs trained per replica, drawn across its
      images.
    jitter_amplitude: the positives' boxes move and scale by U(-a, a).
    pos_radius: of the targets' positive disc.
    **kwargs: `MaskRCNNModel`'s arguments (`include_mask` must be False).
  """

  def __init__(self, grid_head: tf_keras.layers.Layer,
               grid_roi_aligner: tf_keras.layers.Layer,
               max_num_grid: int = 192, jitter_amplitude: float = 0.15,
               pos_radius: int = 1, **kwargs):
    if kwargs.get('mask_head') is not None:
      raise ValueError('Grid R-CNN has no mask branch: mask_head must be '
                       'None.')
    super().__init__(**kwargs)
    self._config_dict.update(
        grid_head=grid_head, grid_roi_aligner=grid_roi_aligner,
        max_num_grid=max_num_grid, jitter_amplitude=jitter_amplitude,
        pos_radius=pos_radius)
    self.grid_head = grid_head
    self.grid_roi_aligner = grid_roi_aligner

  def _run_frcnn_head(self, *args, **kwargs):
    outputs = list(super()._run_frcnn_head(*args, **kwargs))
    # (class_outputs, box_outputs, model_outputs, ...): no regression.
    zeros = tf.zeros_like(outputs[1])
    outputs[1] = zeros
    outputs[2]['box_outputs'] = zeros
    return tuple(outputs)

  def _call_box_outputs(self, images, image_shape, anchor_boxes=None,
                        gt_boxes=None, gt_classes=None, training=None,
                        gt_outer_boxes=None):
    model_outputs, intermediate = super()._call_box_outputs(
        images=images, image_shape=image_shape, anchor_boxes=anchor_boxes,
        gt_boxes=gt_boxes, gt_classes=gt_classes, training=training,
        gt_outer_boxes=gt_outer_boxes)
    features = model_outputs['decoder_features']
    if training and gt_boxes is not None:
      model_outputs.update(self._grid_training_outputs(
          features, intermediate, image_shape))
    elif 'detection_boxes' in model_outputs:
      model_outputs.update(self._refined_detections(features, model_outputs))
    return model_outputs, intermediate

  def _grid_training_outputs(self, features, intermediate,
                             image_shape) -> Mapping[str, tf.Tensor]:
    return grid_training_outputs(
        self.grid_roi_aligner, self.grid_head, features,
        intermediate['current_rois'], intermediate['matched_gt_boxes'],
        intermediate['matched_gt_classes'], image_shape,
        max_num=self._config_dict['max_num_grid'],
        jitter_amplitude=self._config_dict['jitter_amplitude'],
        radius=self._config_dict['pos_radius'])

  def _refined_detections(self, features,
                          model_outputs) -> Mapping[str, tf.Tensor]:
    boxes = model_outputs['detection_boxes']  # [B, D, 4]
    pooled = self.grid_roi_aligner(features, boxes)  # [B, D, 14, 14, C]
    shape = tf.shape(pooled)
    flat = tf.reshape(pooled, tf.concat([[shape[0] * shape[1]], shape[2:]],
                                        0))
    logits = self.grid_head(flat, training=False)['fused']
    refined = tf.reshape(
        grid_points.decode_boxes(logits, tf.reshape(boxes, [-1, 4])),
        tf.shape(boxes))
    # Padded detections (index >= num_detections) keep their zero boxes.
    real = (tf.range(tf.shape(boxes)[1])[None, :] <
            model_outputs['num_detections'][:, None])
    return {'detection_boxes': tf.where(real[..., None], refined, boxes),
            'detection_boxes_before_grid': boxes}

  @property
  def checkpoint_items(self) -> Mapping[str, Any]:
    items = dict(super().checkpoint_items)
    items.update(grid_head=self.grid_head)
    return items


def grid_training_outputs(aligner, head, features, rois, matched_gt_boxes,
                          matched_gt_classes, image_shape, max_num: int,
                          jitter_amplitude: float,
                          radius: int) -> Mapping[str, tf.Tensor]:
  """The grid branch in training, for the RoIs the box head was trained on.

  Up to `max_num` positives of the batch (`sample_positives`), jittered,
  pooled from their own image by `aligner`, through `head`.

  Args:
    rois, matched_gt_boxes: `[B, N, 4]` sampled RoIs and their gt boxes.
    matched_gt_classes: `[B, N]` (> 0: a positive).
    image_shape: `[B, 2]`.

  Returns:
    `grid_fused`, `grid_unfused`, `grid_targets` `[K, 28, 28, 9]` and
    `grid_valid` `[K]` (1.0 for a positive).
  """
  batch, num_rois = tf.shape(rois)[0], rois.shape[1]
  count = min(max_num, num_rois * (rois.shape[0] or 1))
  image, index, valid = grid_points.sample_positives(matched_gt_classes,
                                                     count)
  where = tf.stack([image, index], -1)
  picked = tf.gather_nd(tf.stop_gradient(rois), where)  # [K, 4]
  gt = tf.gather_nd(matched_gt_boxes, where)
  offsets = tf.random.uniform([count, 1, 4], -jitter_amplitude,
                              jitter_amplitude)
  jittered = grid_points.jitter_boxes(
      picked[:, None], offsets, tf.gather(image_shape, image))[:, 0]
  targets = grid_points.grid_targets(jittered, gt, radius=radius)
  pooled = _pool_picks(aligner, features, jittered, image, batch)
  heatmaps = head(pooled, training=True)
  return {'grid_fused': heatmaps['fused'],
          'grid_unfused': heatmaps['unfused'],
          'grid_targets': targets,
          'grid_valid': tf.cast(valid, tf.float32)}


def _pool_picks(aligner, features, boxes, images, batch):
  """`[K, 14, 14, C]` features of `boxes` `[K, 4]`, box k from image
  `images[k]`: GRoIE takes the picks as they are, Model Garden's aligner in
  a per-image table (`pool_in_per_image_table`)."""
  if isinstance(aligner, GRoIE):
    return aligner(features, boxes, box_indices=images)
  return pool_in_per_image_table(aligner, features, boxes, images, batch)


def pool_in_per_image_table(aligner, features, boxes, images, batch):
  """`[K, S, S, C]` features of `boxes` `[K, 4]` by an aligner that takes
  `[B, N, 4]` boxes per image.

  Pick k goes to row k of its image, zero boxes fill the other B - 1 rows,
  and its features are gathered back. That pools B times the boxes used:
  cheap for one bilinear crop per box, not for GRoIE's 5x5 conv and
  attention (`benchmarks/grid.py` times both).
  """
  count = boxes.shape[0]
  slot = tf.stack([images, tf.range(count)], -1)
  per_image = tf.scatter_nd(slot, boxes, [batch, count, 4])
  return tf.gather_nd(aligner(features, per_image), slot)
