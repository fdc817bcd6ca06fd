"""Grid R-CNN's grid points: targets, RoI jitter, sampling, loss and decoding.

As mmdetection's `GridHead` and `GridRoIHead` (Grid R-CNN Plus, Lu et al.,
arXiv 1906.05688, the variant GRoIE's Table V ran) compute them, in Model
Garden's layout: boxes `[y1, x1, y2, x2]` in pixels, heatmaps with the 9
points on the last axis.

Geometry. A RoI is expanded 2x about its centre and covered by a 56x56
map. Point j (mmdetection's column-major order: x-index `j // 3`, y-index
`j % 3`; 0 is the top-left corner, 4 the centre, 8 the bottom-right) is
the gt box's corner, edge midpoint or centre, and predicts only a 28x28
window of the map, whose origin is 0, 14 or 28 along each axis for index
0, 1 or 2.

Example: a RoI equal to its gt box puts each point's 5-pixel plus at the
centre of its window, and decoding those targets gives the box back, up to
half a cell (mmdetection's floor in the targets, +0.5 in the decoding).

>>> box = tf.constant([[100.0, 100.0, 200.0, 200.0]])
>>> targets = grid_targets(box, box)
>>> targets.shape, int(tf.reduce_sum(targets))
(TensorShape([1, 28, 28, 9]), 45)
>>> decode_boxes(tf.where(targets > 0, 10.0, -10.0), box).numpy().round(2)
array([[ 98.21, 101.79, 198.21, 201.79]], dtype=float32)
"""

import tensorflow as tf

__all__ = ['GRID_POINTS', 'WINDOW', 'MAP_SIZE', 'window_origins',
           'grid_targets', 'jitter_boxes', 'decode_boxes',
           'sample_positives', 'grid_loss']

GRID_SIZE = 3
GRID_POINTS = GRID_SIZE * GRID_SIZE
MAP_SIZE = 56  # the whole map over the 2x-expanded RoI
WINDOW = MAP_SIZE // 4 * 2  # 28: each point's window of it


def window_origins():
  """`[9, 2]` int32: the (x, y) origin of each point's window in the map.

  mmdetection's `calc_sub_regions`: index 0 starts at 0, index 2 at
  `MAP_SIZE - WINDOW`, and the middle index at `int((1/2 - 1/4) * MAP_SIZE)`.
  """
  by_index = [0, int((0.5 - 0.25) * MAP_SIZE), MAP_SIZE - WINDOW]
  return tf.constant([[by_index[j // GRID_SIZE], by_index[j % GRID_SIZE]]
                      for j in range(GRID_POINTS)], tf.int32)


def _expanded(boxes):
  """x1, y1, width, height `[R]` of `[R, 4]` boxes expanded 2x, computed in
  mmdetection's order of float32 operations (bin edges depend on it)."""
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  half_w, half_h = (x2 - x1) / 2, (y2 - y1) / 2
  ex1, ey1 = x1 - half_w, y1 - half_h
  return ex1, ey1, (x2 + half_w) - ex1, (y2 + half_h) - ey1


def _point_factors():
  """`[9]` float32 weights of the gt box's first corner per point, in x and
  in y: 1, 1/2, 0 for index 0, 1, 2."""
  index_x = [j // GRID_SIZE for j in range(GRID_POINTS)]
  index_y = [j % GRID_SIZE for j in range(GRID_POINTS)]
  factor = lambda i: 1.0 - i / (GRID_SIZE - 1)
  return (tf.constant([factor(i) for i in index_x], tf.float32),
          tf.constant([factor(i) for i in index_y], tf.float32))


def grid_targets(rois: tf.Tensor, gt_boxes: tf.Tensor,
                 radius: int = 1) -> tf.Tensor:
  """Binary heatmap targets of the grid points.

  Point j of the gt box falls in cell `int((p - ex1) / ew * 56)` of the
  expanded RoI's map (truncated toward zero, as Python's `int` of a
  tensor); the pixels within `radius` of that cell (a 5-pixel plus for
  radius 1) are 1, cut to the point's window. A RoI whose expanded side is
  at most 3 px (1.5 px before expansion) gets all-zero targets.

  Args:
    rois: `[..., 4]` RoIs (jittered positives), `[y1, x1, y2, x2]`.
    gt_boxes: `[..., 4]` their matched gt boxes.
    radius: of the positive disc, in map cells.

  Returns:
    `[..., 28, 28, 9]` float32: rows are y, columns x.
  """
  rois = tf.convert_to_tensor(rois, tf.float32)
  gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
  leading = tf.shape(rois)[:-1]
  rois = tf.reshape(rois, [-1, 4])
  gt_boxes = tf.reshape(gt_boxes, [-1, 4])
  ex1, ey1, ew, eh = _expanded(rois)
  gy1, gx1, gy2, gx2 = tf.unstack(gt_boxes, axis=-1)
  fx, fy = _point_factors()
  point_x = fx * gx1[:, None] + (1.0 - fx) * gx2[:, None]  # [R, 9]
  point_y = fy * gy1[:, None] + (1.0 - fy) * gy2[:, None]
  # Truncation toward zero: tf.cast does what Python's int does.
  cx = tf.cast((point_x - ex1[:, None]) / ew[:, None] * MAP_SIZE, tf.int32)
  cy = tf.cast((point_y - ey1[:, None]) / eh[:, None] * MAP_SIZE, tf.int32)
  origins = window_origins()
  offsets = tf.range(WINDOW, dtype=tf.int32)
  # Map coordinates of each window's columns and rows: [9, 28].
  xs = origins[:, 0:1] + offsets[None, :]
  ys = origins[:, 1:2] + offsets[None, :]
  dx = tf.transpose(xs)[None, None, :, :] - cx[:, None, None, :]  # [R,1,28,9]
  dy = tf.transpose(ys)[None, :, None, :] - cy[:, None, None, :]  # [R,28,1,9]
  inside = dx * dx + dy * dy <= radius * radius  # [R, 28, 28, 9]
  large_enough = (ew > GRID_SIZE) & (eh > GRID_SIZE)
  targets = tf.cast(inside & large_enough[:, None, None, None], tf.float32)
  return tf.reshape(
      targets, tf.concat([leading, [WINDOW, WINDOW, GRID_POINTS]], 0))


def jitter_boxes(boxes: tf.Tensor, offsets: tf.Tensor,
                 image_shape: tf.Tensor) -> tf.Tensor:
  """mmdetection's `_random_jitter` with given offsets.

  The centre moves by `(w, h) * offsets[..., :2]` (x, y), the size scales by
  `1 + offsets[..., 2:]` (w, h), linearly; the box is then clamped to
  `[0, W - 1] x [0, H - 1]`. Training draws the offsets from U(-0.15, 0.15).

  Args:
    boxes: `[B, N, 4]` `[y1, x1, y2, x2]`.
    offsets: `[B, N, 4]`: (dx, dy, dw, dh) relative to the box's size.
    image_shape: `[B, 2]` (height, width) of each image.

  Returns:
    `[B, N, 4]` jittered boxes.
  """
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  ox, oy, ow, oh = tf.unstack(offsets, axis=-1)
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  w, h = tf.abs(x2 - x1), tf.abs(y2 - y1)
  cx, cy = cx + w * ox, cy + h * oy
  w, h = w * (1 + ow), h * (1 + oh)
  image_shape = tf.cast(image_shape, boxes.dtype)
  max_y = image_shape[:, 0:1] - 1
  max_x = image_shape[:, 1:2] - 1
  clamp = lambda v, high: tf.clip_by_value(v, 0.0, high)
  return tf.stack([clamp(cy - h / 2, max_y), clamp(cx - w / 2, max_x),
                   clamp(cy + h / 2, max_y), clamp(cx + w / 2, max_x)], -1)


def decode_boxes(logits: tf.Tensor, rois: tf.Tensor) -> tf.Tensor:
  """Boxes voted by the grid points' heatmaps, as mmdetection's
  `GridHead.get_bboxes`.

  Each point's position is the arg-max of its 28x28 window (the first in
  raster order on ties), moved to the whole map, mapped to pixels with
  `(index + 0.5) / 28 * side + (RoI start - side / 2)`; its probability p
  is the sigmoid there. Each edge is the p-weighted mean of its 3 points:
  x1 from points 0-2, x2 from 6-8, y1 from 0, 3, 6 and y2 from 2, 5, 8.
  Not clipped to the image: mmdetection's clip acts on a copy.

  Args:
    logits: `[..., 28, 28, 9]` fused heatmap logits.
    rois: `[..., 4]` the boxes they were computed for, `[y1, x1, y2, x2]`.

  Returns:
    `[..., 4]` refined boxes, in `rois`' dtype.
  """
  leading = tf.shape(rois)[:-1]
  flat = tf.reshape(tf.cast(logits, tf.float32),
                    [-1, WINDOW * WINDOW, GRID_POINTS])
  position = tf.argmax(flat, axis=1, output_type=tf.int32)  # [R, 9]
  score = tf.sigmoid(tf.reduce_max(flat, axis=1))
  origins = window_origins()
  xs = tf.cast(position % WINDOW + origins[None, :, 0], tf.float32)
  ys = tf.cast(position // WINDOW + origins[None, :, 1], tf.float32)
  boxes = tf.reshape(tf.cast(rois, tf.float32), [-1, 4])
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  width, height = (x2 - x1)[:, None], (y2 - y1)[:, None]
  abs_x = (xs + 0.5) / WINDOW * width + (x1[:, None] - width / 2)
  abs_y = (ys + 0.5) / WINDOW * height + (y1[:, None] - height / 2)

  def vote(values, points):
    picked = tf.gather(score, points, axis=1)
    return (tf.reduce_sum(tf.gather(values, points, axis=1) * picked, 1) /
            tf.reduce_sum(picked, 1))

  refined = tf.stack([vote(abs_y, [0, 3, 6]), vote(abs_x, [0, 1, 2]),
                      vote(abs_y, [2, 5, 8]), vote(abs_x, [6, 7, 8])], -1)
  return tf.cast(tf.reshape(refined, tf.concat([leading, [4]], 0)),
                 rois.dtype)


def sample_positives(gt_classes: tf.Tensor, max_num: int,
                     uniform: tf.Tensor = None):
  """Grid R-CNN Plus's cross-image sampling: up to `max_num` positive RoIs
  drawn at random from all images of the (per-replica) batch.

  mmdetection pools every positive of the GPU's images and keeps
  `randperm(P)[:max_num]`. With static shapes: every positive scores 1 +
  u/2 and every other RoI u/2, u ~ U(0, 1), and the top `max_num` are
  kept; those that are not positives (too few in the batch) are marked
  invalid.

  Args:
    gt_classes: `[B, N]` matched classes of the sampled RoIs (> 0: a
      positive, 0: background, < 0: padding).
    max_num: RoIs kept (192 per GPU in mmdetection), at most B * N.
    uniform: `[B, N]` the u above, for tests; drawn if None.

  Returns:
    `(image, roi, valid)`, each `[max_num]`: the image and the RoI index in
    it of each pick, and whether it is a positive.
  """
  shape = tf.shape(gt_classes)
  if uniform is None:
    uniform = tf.random.uniform(shape)
  positive = tf.reshape(gt_classes > 0, [-1])
  score = tf.cast(positive, tf.float32) + 0.5 * tf.reshape(uniform, [-1])
  picked = tf.math.top_k(score, k=max_num, sorted=False).indices
  return (picked // shape[1], picked % shape[1], tf.gather(positive, picked))


def grid_loss(fused: tf.Tensor, unfused: tf.Tensor, targets: tf.Tensor,
              valid: tf.Tensor, weight: float = 15.0) -> tf.Tensor:
  """mmdetection's grid loss: `weight` times the sigmoid cross-entropy,
  averaged over every pixel of every heatmap of the valid RoIs, of the
  fused heatmaps plus that of the unfused ones; 0 without a valid RoI.

  Args:
    fused, unfused: `[K, 28, 28, 9]` logits.
    targets: `[K, 28, 28, 9]` binary targets.
    valid: `[K]` bool.
  """
  mask = tf.cast(valid, tf.float32)[:, None, None, None]
  count = tf.reduce_sum(mask) * float(WINDOW * WINDOW * GRID_POINTS)

  def mean_bce(logits):
    bce = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(bce * mask), count)

  return weight * (mean_bce(fused) + mean_bce(unfused))
