"""RoIAlign (He et al., "Mask R-CNN", ICCV 2017) with mmcv's exact semantics.

Two implementations compute the same numbers:

* ``'crop_and_resize'`` builds on ``tf.image.crop_and_resize``. That op samples
  ``crop`` evenly spaced points between two normalised end points and returns
  ``extrapolation_value`` outside the map. mmcv's bilinear rule instead
  clamps samples in [-1, 0) and (H-1, H] to the edge and zeroes anything
  further out. Padding the map by one edge-replicated pixel on each side
  turns that clamp into ordinary interpolation, so the two rules agree
  exactly (see ``../shared/notes/roialign-crop-and-resize.md``).
* ``'gather'`` computes mmcv's bilinear taps directly with ``tf.gather``. XLA
  has no kernel for ``CropAndResize``, so this path is what runs under
  ``tf.function(jit_compile=True)`` and on TPUs.

``'auto'`` (the default) picks ``'gather'`` inside an XLA compilation and
``'crop_and_resize'`` everywhere else.

Pooling always runs in float32: ``crop_and_resize`` computes in float32
whatever its input, and box coordinates of a 1024-pixel image need float32's
mantissa. The result is cast back to ``features.dtype``. ``crop_and_resize``
reads float16 (and float32) maps as they are and bfloat16 ones not at all,
so a bfloat16 map is cast after its padding: each level is copied once at
16 bits and once at 32, not twice at 32.
"""

from typing import Tuple

import tensorflow as tf
from tf_keras.src.utils import control_flow_util

__all__ = ['roi_align', 'check_roi_align_arguments', 'IMPLEMENTATIONS']

IMPLEMENTATIONS = ('auto', 'crop_and_resize', 'gather')


def check_roi_align_arguments(output_size, sampling_ratio, implementation):
  """Raises ValueError naming the first invalid RoIAlign argument."""
  if not isinstance(output_size, int) or output_size < 1:
    raise ValueError(f'output_size must be a positive int, got {output_size!r}.')
  if sampling_ratio == 0:
    raise ValueError(
        'sampling_ratio=0 (adaptive, ceil(extent / output_size) samples per '
        'bin and per RoI) cannot be expressed with one fixed crop size; pass '
        'a fixed sampling_ratio >= 1 (GRoIE uses 2).')
  if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
    raise ValueError(
        f'sampling_ratio must be an int >= 1, got {sampling_ratio!r}.')
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got '
                     f'{implementation!r}.')


def _static_or_dynamic(tensor: tf.Tensor, axis: int):
  static = tensor.shape[axis]
  return static if static is not None else tf.shape(tensor)[axis]


def _sample_coordinates(
    boxes: tf.Tensor, stride: float, num_samples: int,
    aligned: bool) -> Tuple[tf.Tensor, tf.Tensor]:
  """Coordinates of the sample rows and columns of every box, in map pixels.

  Args:
    boxes: float32 `[K, 4]` as `[y1, x1, y2, x2]` in input-image pixels.
    stride: the level's stride (input pixels per map pixel).
    num_samples: `output_size * sampling_ratio`, samples along each axis.
    aligned: mmcv's `aligned` flag (half-pixel shift, no minimum extent).

  Returns:
    `(ys, xs)`, each float32 `[K, num_samples]`: sample k of a box sits at
    `start + (k + 0.5) * extent / num_samples` in pixel-centre coordinates.
  """
  offset = 0.5 if aligned else 0.0
  start = boxes[:, :2] / stride - offset  # [K, 2] (y, x)
  extent = boxes[:, 2:] / stride - offset - start  # [K, 2]
  if not aligned:
    # The legacy rule (mmcv aligned=False, torchvision, Detectron) forces
    # RoIs to be at least one map pixel tall and wide.
    extent = tf.maximum(extent, 1.0)
  steps = (tf.range(num_samples, dtype=tf.float32) + 0.5) / num_samples
  coords = start[:, :, None] + extent[:, :, None] * steps  # [K, 2, G]
  return coords[:, 0], coords[:, 1]


def _pool_with_crop_and_resize(features, box_indices, ys, xs, num_samples):
  """Samples `[K, G, G, C]` float32 with tf.image.crop_and_resize.

  `features` may have any float dtype (see the module doc).
  """
  height = tf.cast(tf.shape(features)[1], tf.float32)
  width = tf.cast(tf.shape(features)[2], tf.float32)
  # Edge replication by one pixel: [B, H+2, W+2, C]. A sample at map row -1
  # becomes padded row 0 and reads the replicated edge, as mmcv's clamp does.
  padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode='SYMMETRIC')
  if padded.dtype not in (tf.float16, tf.float32):
    padded = tf.cast(padded, tf.float32)
  # crop_and_resize places its first and last samples on the normalised box
  # corners; normalised 0 and 1 are padded rows 0 and H+1.
  normalised = tf.stack([(ys[:, 0] + 1.0) / (height + 1.0),
                         (xs[:, 0] + 1.0) / (width + 1.0),
                         (ys[:, -1] + 1.0) / (height + 1.0),
                         (xs[:, -1] + 1.0) / (width + 1.0)], axis=1)  # [K, 4]
  return tf.image.crop_and_resize(
      padded, normalised, box_indices, [num_samples, num_samples],
      method='bilinear', extrapolation_value=0.0)  # [K, G, G, C]


def _bilinear_taps(coords, size):
  """mmcv's bilinear rule along one axis.

  Args:
    coords: float32 `[K, G]` sample coordinates.
    size: the map's extent along this axis (int or scalar tensor).

  Returns:
    `(low, high, w_low, w_high)`: int32 `[K, G]` tap indices and float32
    `[K, G]` weights; both weights are 0 for samples outside [-1, size].
  """
  size_f = tf.cast(size, tf.float32)
  inside = tf.logical_and(coords >= -1.0, coords <= size_f)
  clamped = tf.maximum(coords, 0.0)
  low = tf.floor(clamped)
  at_edge = low >= size_f - 1.0
  low = tf.where(at_edge, size_f - 1.0, low)
  high = tf.where(at_edge, size_f - 1.0, low + 1.0)
  clamped = tf.where(at_edge, size_f - 1.0, clamped)
  frac = clamped - low
  mask = tf.cast(inside, tf.float32)
  return (tf.cast(low, tf.int32), tf.cast(high, tf.int32),
          (1.0 - frac) * mask, frac * mask)


def _pool_with_gather(features, box_indices, ys, xs):
  """Samples `[K, G, G, C]` by gathering mmcv's four bilinear taps."""
  shape = tf.shape(features)
  height, width, channels = shape[1], shape[2], shape[3]
  y_low, y_high, wy_low, wy_high = _bilinear_taps(ys, height)  # [K, G] each
  x_low, x_high, wx_low, wx_high = _bilinear_taps(xs, width)
  flat = tf.reshape(features, [-1, channels])  # [B*H*W, C]
  base = box_indices[:, None, None] * height * width  # [K, 1, 1]

  def tap(rows, cols):
    index = base + rows[:, :, None] * width + cols[:, None, :]  # [K, G, G]
    return tf.gather(flat, index)  # [K, G, G, C]

  def weight(wy, wx):
    return (wy[:, :, None] * wx[:, None, :])[..., None]  # [K, G, G, 1]

  return (tap(y_low, x_low) * weight(wy_low, wx_low) +
          tap(y_low, x_high) * weight(wy_low, wx_high) +
          tap(y_high, x_low) * weight(wy_high, wx_low) +
          tap(y_high, x_high) * weight(wy_high, wx_high))


def roi_align(features: tf.Tensor,
              boxes: tf.Tensor,
              output_size: int,
              stride: float,
              sampling_ratio: int = 2,
              aligned: bool = True,
              implementation: str = 'auto') -> tf.Tensor:
  """Average RoIAlign of every box from one feature map.

  Reproduces mmcv's ``RoIAlign(output_size, spatial_scale=1/stride,
  sampling_ratio, pool_mode='avg', aligned)``. Each of the ``output_size**2``
  bins is the mean of ``sampling_ratio**2`` bilinear samples. A sample more
  than one pixel outside the map contributes 0; one within a pixel of the
  border reads the border.

  Args:
    features: `[B, H, W, C]` feature map of one pyramid level, any float dtype.
    boxes: `[B, N, 4]` boxes `[y1, x1, y2, x2]` in input-image pixels (Model
      Garden's convention); box `n` of image `b` is pooled from `features[b]`.
    output_size: P, the side of the pooled square.
    stride: input pixels per feature pixel (4 for P2, 8 for P3, ...).
    sampling_ratio: samples per bin along each axis, >= 1. mmcv's adaptive
      mode (0) is rejected: it needs a different grid per box.
    aligned: True for the half-pixel convention of mmdetection 2.x/3.x
      (boxes shifted by -0.5 map pixels, any extent). False for the legacy
      rule of Detectron, torchvision and mmcv (no shift, extent >= 1 pixel).
    implementation: 'crop_and_resize', 'gather' (XLA-compatible) or 'auto'
      ('gather' inside an XLA compilation, else 'crop_and_resize').

  Returns:
    `[B, N, P, P, C]` pooled features in `features.dtype`.

  Raises:
    ValueError: for an invalid `output_size`, `stride`, `sampling_ratio` or
      `implementation`, or inputs of the wrong rank.

  Example:

  >>> features = tf.reshape(tf.range(64, dtype=tf.float32), [1, 8, 8, 1])
  >>> boxes = tf.constant([[[0., 0., 16., 16.]]])
  >>> roi_align(features, boxes, output_size=2, stride=4).shape
  TensorShape([1, 1, 2, 2, 1])
  """
  check_roi_align_arguments(output_size, sampling_ratio, implementation)
  if not stride > 0:
    raise ValueError(f'stride must be positive, got {stride!r}.')
  if features.shape.rank != 4:
    raise ValueError(f'features must be [B, H, W, C], got {features.shape}.')
  if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
    raise ValueError(f'boxes must be [B, N, 4], got {boxes.shape}.')
  if implementation == 'auto':
    in_xla = control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph())
    implementation = 'gather' if in_xla else 'crop_and_resize'

  with tf.name_scope('roi_align'):
    out_dtype = features.dtype
    batch_size = _static_or_dynamic(boxes, 0)
    num_boxes = _static_or_dynamic(boxes, 1)
    channels = _static_or_dynamic(features, 3)
    flat_boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])  # [K, 4]
    box_indices = tf.repeat(
        tf.range(tf.shape(boxes)[0], dtype=tf.int32),
        tf.shape(boxes)[1])  # [K]
    num_samples = output_size * sampling_ratio
    ys, xs = _sample_coordinates(flat_boxes, stride, num_samples, aligned)
    if implementation == 'crop_and_resize':
      samples = _pool_with_crop_and_resize(features, box_indices, ys, xs,
                                           num_samples)
    else:
      samples = _pool_with_gather(tf.cast(features, tf.float32), box_indices,
                                  ys, xs)
    # [K, G, G, C] -> [K, P, P, C]: each bin is the mean of its g x g samples.
    pooled = tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, 'VALID')
    pooled = tf.reshape(
        pooled, [batch_size, num_boxes, output_size, output_size, channels])
    return tf.cast(pooled, out_dtype)
