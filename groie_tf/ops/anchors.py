"""mmdetection's anchors (`AnchorGenerator`, center_offset 0) in Model
Garden's layout.

mmdetection 2.x/3.x centres the anchors of feature cell (i, j) of a level
with stride s at image pixel (j*s, i*s); Model Garden centres them at
((j + 1/2) s, (i + 1/2) s), half a stride away on every level. The shapes
are the same set: for a base size b = anchor_size * s, scale k and an
aspect ratio a = w/h (Model Garden's convention; mmdetection's ratio is
h/w = 1/a), the anchor is `w = b k / sqrt(1/a)` wide and `h = b k sqrt(1/a)`
tall. mmdetection's RPN lists ratios h/w [0.5, 1, 2], that is Model
Garden's `aspect_ratios: [2.0, 1.0, 0.5]`, in that order.

The arithmetic is mmdetection's, in float32 and in its order (base anchor
first, shift added last), so that the anchors are bit for bit its own.
"""

from typing import Dict, Mapping, Sequence, Tuple, Union

import tensorflow as tf

Size = Union[int, tf.Tensor]


def base_anchors(stride: int, anchor_size: float, num_scales: int,
                 aspect_ratios: Sequence[float]) -> tf.Tensor:
  """float32 `[A, 4]` anchors `[x1, y1, x2, y2]` of the cell at the origin.

  A = len(aspect_ratios) * num_scales, ratio-major (mmdetection's
  `scale_major=True` order): anchor `r * num_scales + k` has ratio r and
  scale `anchor_size * 2**(k / num_scales)`.
  """
  ratios_h_over_w = tf.constant([1.0 / a for a in aspect_ratios], tf.float32)
  scales = tf.constant([anchor_size * 2.0**(k / num_scales)
                        for k in range(num_scales)], tf.float32)
  h_ratios = tf.sqrt(ratios_h_over_w)
  w_ratios = 1.0 / h_ratios
  size = tf.constant(stride, tf.float32)
  widths = tf.reshape(size * w_ratios[:, None] * scales[None, :], [-1])
  heights = tf.reshape(size * h_ratios[:, None] * scales[None, :], [-1])
  return tf.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths,
                   0.5 * heights], axis=1)


def level_anchors(height: Size, width: Size, stride: int,
                  anchor_size: float, num_scales: int,
                  aspect_ratios: Sequence[float]) -> tf.Tensor:
  """float32 `[height, width, A * 4]` anchors of one level, each
  `[y1, x1, y2, x2]` (Model Garden's layout), cell (i, j) centred at
  `(i * stride, j * stride)`.

  Example (one square anchor of 8 strides per cell):

  >>> level_anchors(1, 2, 4, 8.0, 1, [1.0]).numpy().tolist()
  [[[-16.0, -16.0, 16.0, 16.0], [-16.0, -12.0, 16.0, 20.0]]]
  """
  base = base_anchors(stride, anchor_size, num_scales, aspect_ratios)
  shift_x = tf.cast(tf.range(width), tf.float32) * float(stride)
  shift_y = tf.cast(tf.range(height), tf.float32) * float(stride)
  shifts = tf.stack([
      tf.broadcast_to(shift_x[None, :], [height, width]),
      tf.broadcast_to(shift_y[:, None], [height, width])], axis=-1)
  shifts = tf.tile(shifts, [1, 1, 2])  # [H, W, 4] as (x, y, x, y)
  anchors = base[None, None] + shifts[:, :, None]  # [H, W, A, 4] xyxy
  anchors = tf.gather(anchors, [1, 0, 3, 2], axis=-1)  # yxyx
  return tf.reshape(anchors, [height, width, -1])


def multilevel_anchors(
    feature_sizes: Mapping[str, Tuple[Size, Size]],
    anchor_size: float, num_scales: int,
    aspect_ratios: Sequence[float]) -> Dict[str, tf.Tensor]:
  """`level_anchors` of every level: `{level: [H_l, W_l, A * 4]}` for
  `feature_sizes` `{level: (H_l, W_l)}`, stride `2**level`."""
  return {level: level_anchors(height, width, 2**int(level), anchor_size,
                               num_scales, aspect_ratios)
          for level, (height, width) in feature_sizes.items()}
