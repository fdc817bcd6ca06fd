"""RoIAlign (He et al., "Mask R-CNN", ICCV 2017) with mmcv's exact semantics.

Every implementation computes the same numbers. The forward pass is one of

* ``tf.image.crop_and_resize`` on the map padded by one edge-replicated
  pixel. That op samples ``crop`` evenly spaced points between two
  normalised end points and returns ``extrapolation_value`` outside the
  map; mmcv's bilinear rule instead clamps samples in [-1, 0) and (H-1, H]
  to the edge and zeroes anything further out. The padding turns that
  clamp into ordinary interpolation, so the two rules agree exactly
  (``docs/numerics.md`` measures it).
* ``tf.gather`` of mmcv's four bilinear taps, computed directly. XLA has no
  kernel for ``CropAndResize``: this is what compiles.

RoIAlign is linear in the features, so its feature gradient is the
transposed sampling operator applied to the upstream gradient. The
``implementation`` argument names a forward pass and its gradient:

============  ===============  =============================================
name          forward          feature gradient
============  ===============  =============================================
``kernel``    crop_and_resize  the project's C++ CPU kernel
                               (``kernels/roi_align_grad.cc``, built at
                               first use by ``native.py``): its threads
                               split the gradient's images and channels,
                               not the boxes, so no two write one element;
                               exact and bit-for-bit reproducible
``sparse``    crop_and_resize  the transposed operator as a sparse
                               ``[B*H*W, K*P*P]`` matrix applied by
                               ``tf.sparse.sparse_dense_matmul``: exact,
                               portable; deterministic on a CPU (one
                               sequential loop), slower there
``atomic``    crop_and_resize  TensorFlow's own ``CropAndResize`` gradient:
                               on a GPU, atomic additions, exact up to the
                               order of the additions; GPU only, because
                               its CPU kernel splits the boxes over threads
                               that add into the same pixels unsynchronised
                               and loses additions where boxes overlap
                               (measured: off by up to 1.8 where float32
                               rounding is 1e-5)
``gather``    tf.gather        TensorFlow's gradient of ``tf.gather``, a
                               segment sum: exact; deterministic on a GPU
                               when op determinism is enabled
============  ===============  =============================================

``'auto'`` (the default) chooses by where the op is traced
(``choose_implementation``):

* inside an XLA compilation (``jit_compile``, TPUs): ``gather``;
* with a GPU visible: ``gather`` if op determinism is enabled
  (``tf.config.experimental.enable_op_determinism()``: TensorFlow has no
  deterministic GPU kernel for the gradients of ``CropAndResize`` or of
  the sparse product, and raises on them), else ``atomic``, TensorFlow's
  fused GPU kernels, which do not hold the gather path's four
  ``[K, G, G, C]`` tap tensors per level for the backward pass (no GPU was
  available to time either);
* otherwise (a CPU): ``kernel`` where the C++ kernel builds, else
  ``sparse`` (the log says why).

A ``kernel`` gradient traced while a SavedModel is written is the
``sparse`` one: TensorFlow saves the traced custom gradients with the
model, and one holding the project's op could only be loaded where the op
is registered (not in TF Serving).

Like mmcv's RoIAlign, neither path passes a gradient to the boxes (Model
Garden stops it before its aligners anyway).

Pooling always runs in float32: ``crop_and_resize`` computes in float32
whatever its input, and box coordinates of a 1024-pixel image need float32's
mantissa. The result is cast back to ``features.dtype``. ``crop_and_resize``
reads float16 (and float32) maps as they are and bfloat16 ones not at all,
so a bfloat16 map is cast after its padding: each level is copied once at
16 bits and once at 32, not twice at 32.
"""

import dataclasses
import functools
from typing import List, Tuple

from absl import logging
import tensorflow as tf
# TensorFlow has no public API for three questions asked here (inside XLA?
# op determinism on? a SavedModel being written?): these are its own
# functions for them.
# pylint: disable=g-direct-tensorflow-import
from tensorflow.python.framework import config as tf_config
from tensorflow.python.ops import control_flow_util
from tensorflow.python.saved_model import save_context

from groie_tf.ops import native

__all__ = ['roi_align', 'roi_align_flat', 'check_roi_align_arguments',
           'checked_box_indices', 'choose_implementation', 'TraceContext',
           'IMPLEMENTATIONS']

IMPLEMENTATIONS = ('auto', 'kernel', 'sparse', 'atomic', 'gather')

# Adaptive sampling (sampling_ratio=0): samples per bin and axis are
# mmcv's ceil(extent / output_size) up to this many; a RoI that needs more
# along an axis gets this many, evenly spread (docs/numerics.md measures
# how often and by how much that differs from mmcv).
ADAPTIVE_MAX_SAMPLES = 8


def check_roi_align_arguments(output_size, sampling_ratio, implementation):
  """Raises ValueError naming the first invalid RoIAlign argument."""
  if not isinstance(output_size, int) or output_size < 1:
    raise ValueError(f'output_size must be a positive int, got {output_size!r}.')
  if (isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int)
      or sampling_ratio < 0):
    raise ValueError(
        f'sampling_ratio must be an int >= 1, or 0 for adaptive sampling, got '
        f'{sampling_ratio!r}.')
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got '
                     f'{implementation!r}.')
  if sampling_ratio == 0 and implementation not in ('auto', 'gather'):
    raise ValueError(
        'sampling_ratio=0 (adaptive) runs the gather implementation only: '
        f"pass implementation='auto' or 'gather', got {implementation!r}.")


def checked_box_indices(box_indices, boxes: tf.Tensor) -> tf.Tensor:
  """`box_indices` as a tensor; ValueError unless it is `[K]` for `boxes`
  `[K, 4]`."""
  box_indices = tf.convert_to_tensor(box_indices)
  if (box_indices.shape.rank != 1 or
      not box_indices.shape.is_compatible_with(boxes.shape[:1])):
    raise ValueError(f'box_indices must be [K] for boxes {boxes.shape}, got '
                     f'{box_indices.shape}.')
  return box_indices


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


def _taps(box_indices, ys, xs, height, width) -> List[Tuple[tf.Tensor,
                                                             tf.Tensor]]:
  """mmcv's four bilinear taps of every sample, as flat pixel indices.

  Args:
    box_indices: int32 `[K]`, the image of each box.
    ys, xs: float32 `[K, G]` sample rows and columns of each box.
    height, width: the map's size (ints or scalar tensors).

  Returns:
    Four `(pixel, weight)` pairs, one per tap: int32 `[K, G, G]` indices into
    the `B*H*W` pixels of the map and float32 `[K, G, G]` weights.
  """
  y_low, y_high, wy_low, wy_high = _bilinear_taps(ys, height)  # [K, G] each
  x_low, x_high, wx_low, wx_high = _bilinear_taps(xs, width)
  base = box_indices[:, None, None] * height * width  # [K, 1, 1]
  return [(base + rows[:, :, None] * width + cols[:, None, :],
           wy[:, :, None] * wx[:, None, :])
          for rows, wy in ((y_low, wy_low), (y_high, wy_high))
          for cols, wx in ((x_low, wx_low), (x_high, wx_high))]


def _average_bins(samples, sampling_ratio):
  """`[K, P*g, P*h, C]` -> `[K, P, P, C]`: each bin is the mean of its
  `g x h` samples; `sampling_ratio` is g = h, or `(g, h)`."""
  return tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, 'VALID')


def _pool_with_gather(features, box_indices, ys, xs, sampling_ratio):
  """`[K, P, P, C]` float32 bins from float32 `[B, H, W, C]` features;
  `ys` `[K, P*g]`, `xs` `[K, P*h]`, `sampling_ratio` g = h or `(g, h)`."""
  shape = tf.shape(features)
  flat = tf.reshape(features, [-1, shape[3]])  # [B*H*W, C]
  samples = tf.add_n([
      tf.gather(flat, pixels) * weights[..., None]  # [K, G, G, C]
      for pixels, weights in _taps(box_indices, ys, xs, shape[1], shape[2])])
  return _average_bins(samples, sampling_ratio)


def _transposed_operator(box_indices, ys, xs, feature_shape, sampling_ratio):
  """RoIAlign's transpose, a sparse `[B*H*W, K*P*P]` float32 matrix.

  Entry `(pixel, bin)` holds the weight with which the bin reads the pixel:
  each of the bin's `g*g` samples (g = sampling_ratio) adds its 4 tap
  weights divided by `g*g`. An entry may be listed more than once (two taps
  on one pixel, at the border or between close samples); the product adds
  the repeats up. Samples outside the map have weight 0.
  """
  batch, height, width = feature_shape[0], feature_shape[1], feature_shape[2]
  num_boxes, num_samples = tf.shape(ys)[0], ys.shape[1]
  size = num_samples // sampling_ratio  # P
  # The bin of sample (k, i, j) is k*P*P + (i // g)*P + j // g.
  bins = tf.reshape(tf.range(num_boxes * size * size),
                    [num_boxes, size, 1, size, 1])
  bins = tf.broadcast_to(
      bins, [num_boxes, size, sampling_ratio, size, sampling_ratio])
  bins = tf.reshape(bins, [num_boxes, num_samples, num_samples, 1])
  taps = _taps(box_indices, ys, xs, height, width)
  # Taps on the last axis: consecutive entries read one bin and write
  # neighbouring pixels (10% faster than taps on the first axis).
  pixels = tf.stack([pixel for pixel, _ in taps], -1)  # [K, G, G, 4]
  weights = tf.stack([weight for _, weight in taps], -1)
  bins = tf.broadcast_to(bins, tf.shape(pixels))
  indices = tf.stack([tf.reshape(pixels, [-1]), tf.reshape(bins, [-1])], 1)
  dense_shape = tf.stack([batch * height * width, num_boxes * size * size])
  return tf.sparse.SparseTensor(
      tf.cast(indices, tf.int64),
      tf.reshape(weights, [-1]) / float(sampling_ratio**2),
      tf.cast(dense_shape, tf.int64))


@dataclasses.dataclass(frozen=True)
class TraceContext:
  """Where RoIAlign is being traced: what `'auto'` chooses by."""
  in_xla: bool  # inside an XLA compilation (jit_compile, TPUs)
  has_gpu: bool  # a GPU is visible
  op_determinism: bool  # tf.config.experimental.enable_op_determinism()
  kernel_loaded: bool  # the C++ kernel is built and loaded


def current_context(requested: str) -> TraceContext:
  """The context of the op being traced now. The C++ kernel is built (once
  per process) only if `requested` may use it where it could run: outside
  XLA, without a GPU."""
  in_xla = control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())
  has_gpu = bool(tf.config.list_logical_devices('GPU'))
  may_use_kernel = requested in ('auto', 'kernel') and not (in_xla or has_gpu)
  return TraceContext(
      in_xla=in_xla, has_gpu=has_gpu,
      op_determinism=tf_config.is_op_determinism_enabled(),
      kernel_loaded=may_use_kernel and native.load() is not None)


def choose_implementation(requested: str, context: TraceContext) -> str:
  """The implementation that runs for `requested` in `context` (the rules
  are in the module doc).

  Raises:
    ValueError: `requested` cannot run in `context`, saying what can.
  """
  if context.in_xla:
    if requested not in ('auto', 'gather'):
      raise ValueError(
          f'RoIAlign implementation {requested!r} cannot run inside an XLA '
          "compilation (XLA has no CropAndResize kernel): use 'gather' or "
          "'auto'.")
    return 'gather'
  if requested == 'auto':
    if context.has_gpu:
      return 'gather' if context.op_determinism else 'atomic'
    requested = 'kernel' if context.kernel_loaded else 'sparse'
  if requested == 'kernel':
    if not context.kernel_loaded:
      raise ValueError(
          "RoIAlign implementation 'kernel' needs the C++ CPU kernel, which "
          + ('is not used where a GPU is visible' if context.has_gpu else
             'could not be built or loaded here (the log says why)')
          + ": use 'auto' or 'sparse'.")
  if requested == 'atomic':
    if not context.has_gpu:
      raise ValueError(
          "RoIAlign implementation 'atomic' (TensorFlow's CropAndResize "
          'gradient) needs a GPU: its CPU kernel loses additions where '
          "boxes overlap. Use 'auto', 'kernel' or 'sparse'.")
    if context.op_determinism:
      raise ValueError(
          "RoIAlign implementation 'atomic' has no deterministic GPU kernel "
          "and op determinism is enabled: use 'gather' or 'auto'.")
  return requested


@functools.lru_cache(maxsize=None)
def _log_choice(requested: str, chosen: str) -> None:
  """Says once per process which implementation runs for a request."""
  logging.info('RoIAlign: %r runs the %r implementation.', requested, chosen)


def padded_crop_boxes(ys, xs, feature_shape):
  """`tf.image.crop_and_resize` boxes `[K, 4]` whose samples are `ys`, `xs`
  in the map padded by one pixel on each side.

  crop_and_resize places its first and last samples on the normalised box
  corners; normalised 0 and 1 are padded rows 0 and H+1.
  """
  height = tf.cast(feature_shape[1], tf.float32)
  width = tf.cast(feature_shape[2], tf.float32)
  return tf.stack([(ys[:, 0] + 1.0) / (height + 1.0),
                   (xs[:, 0] + 1.0) / (width + 1.0),
                   (ys[:, -1] + 1.0) / (height + 1.0),
                   (xs[:, -1] + 1.0) / (width + 1.0)], axis=1)


def _pool_with_crop_and_resize(features, box_indices, ys, xs, sampling_ratio,
                               gradient):
  """`[K, P, P, C]` float32 bins by tf.image.crop_and_resize.

  `features` may have any float dtype (see the module doc). `gradient` is
  'kernel', 'sparse' or 'atomic' (the module doc); the boxes (`ys`, `xs`)
  get none.
  """
  num_samples = ys.shape[1]

  def pool(features):
    # Edge replication by one pixel: [B, H+2, W+2, C]. A sample at map row -1
    # becomes padded row 0 and reads the replicated edge, as mmcv's clamp
    # does.
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]],
                    mode='SYMMETRIC')
    if padded.dtype not in (tf.float16, tf.float32):
      padded = tf.cast(padded, tf.float32)
    samples = tf.image.crop_and_resize(
        padded, padded_crop_boxes(ys, xs, tf.shape(features)), box_indices,
        [num_samples, num_samples],
        method='bilinear', extrapolation_value=0.0)  # [K, G, G, C]
    return _average_bins(samples, sampling_ratio)

  if gradient == 'atomic':
    return pool(features)  # TensorFlow's registered gradients

  @tf.custom_gradient
  def pool_with_exact_gradient(features):

    def gradient_fn(upstream):  # [K, P, P, C] float32
      shape = tf.shape(features)
      # A gradient traced while a SavedModel is written is saved with it
      # (the forward pass may have been traced before): it must not need
      # the C++ op, which only this package registers.
      if gradient == 'kernel' and not save_context.in_save_context():
        grad = native.load().groie_roi_align_grad(
            upstream, ys, xs, box_indices, shape,
            sampling_ratio=sampling_ratio)
        return tf.cast(grad, features.dtype)
      operator = _transposed_operator(box_indices, ys, xs, shape,
                                      sampling_ratio)
      # One product per level: the levels' products run in parallel, and
      # splitting one product over channel chunks measured slower.
      grad = tf.sparse.sparse_dense_matmul(
          operator, tf.reshape(upstream, [-1, shape[3]]))  # [B*H*W, C]
      return tf.cast(tf.reshape(grad, shape), features.dtype)

    return pool(features), gradient_fn

  return pool_with_exact_gradient(features)


def _pool_adaptively(features, box_indices, boxes, output_size, stride,
                     aligned):
  """`[K, P, P, C]` float32 bins with mmcv's adaptive sampling.

  A box `e` map pixels tall gets `ceil(e / P)` samples per bin along that
  axis (at most `ADAPTIVE_MAX_SAMPLES`); one of zero or negative extent
  gets none, and mmcv's bins are then 0. Boxes are pooled in groups of
  one sample count, each by the gather path, whose gradient is TensorFlow's
  (exact).
  """
  cap = ADAPTIVE_MAX_SAMPLES
  offset = 0.5 if aligned else 0.0
  start = boxes[:, :2] / stride - offset  # [K, 2] (y, x)
  extent = boxes[:, 2:] / stride - offset - start
  if not aligned:
    extent = tf.maximum(extent, 1.0)
  counts = tf.math.ceil(extent / float(output_size))  # mmcv's, [K, 2]
  empty = tf.reduce_any(counts <= 0.0, axis=1)
  counts = tf.cast(tf.clip_by_value(counts, 1.0, float(cap)), tf.int32)
  groups = (counts[:, 0] - 1) * cap + counts[:, 1] - 1  # [K]
  indices = tf.dynamic_partition(tf.range(tf.shape(boxes)[0]), groups,
                                 cap * cap)
  pooled = []
  for group, members in enumerate(indices):
    samples = (group // cap + 1, group % cap + 1)  # (rows, columns)
    steps = [(tf.range(output_size * n, dtype=tf.float32) + 0.5) /
             float(output_size * n) for n in samples]
    ys = tf.gather(start[:, 0], members)[:, None] + tf.gather(
        extent[:, 0], members)[:, None] * steps[0]
    xs = tf.gather(start[:, 1], members)[:, None] + tf.gather(
        extent[:, 1], members)[:, None] * steps[1]
    pooled.append(_pool_with_gather(features, tf.gather(box_indices, members),
                                    ys, xs, samples))
  pooled = tf.dynamic_stitch(indices, pooled)  # [K, P, P, C]
  return tf.where(empty[:, None, None, None], 0.0, pooled)


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
    sampling_ratio: samples per bin along each axis, >= 1; or 0, mmcv's
      adaptive sampling (`ceil(extent / output_size)` per box and axis, at
      most `ADAPTIVE_MAX_SAMPLES`), which runs the gather implementation.
    aligned: True for the half-pixel convention of mmdetection 2.x/3.x
      (boxes shifted by -0.5 map pixels, any extent). False for the legacy
      rule of Detectron, torchvision and mmcv (no shift, extent >= 1 pixel).
    implementation: 'auto' (the default), 'kernel', 'sparse', 'atomic' or
      'gather': the forward pass and feature gradient (module doc, which
      also says what 'auto' chooses on each device).

  Returns:
    `[B, N, P, P, C]` pooled features in `features.dtype`. Differentiable
    with respect to `features` (exactly; see the module doc), not to
    `boxes`.

  Raises:
    ValueError: for an invalid `output_size`, `stride`, `sampling_ratio` or
      `implementation`, an implementation that cannot run where the op is
      traced (`choose_implementation`), or inputs of the wrong rank.

  Example:

  >>> features = tf.reshape(tf.range(64, dtype=tf.float32), [1, 8, 8, 1])
  >>> boxes = tf.constant([[[0., 0., 16., 16.]]])
  >>> roi_align(features, boxes, output_size=2, stride=4).shape
  TensorShape([1, 1, 2, 2, 1])
  >>> roi_align(features, boxes, output_size=2, stride=4,
  ...           sampling_ratio=0).shape  # adaptive
  TensorShape([1, 1, 2, 2, 1])
  """
  if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
    raise ValueError(f'boxes must be [B, N, 4], got {boxes.shape}.')
  with tf.name_scope('roi_align'):
    box_indices = tf.repeat(
        tf.range(tf.shape(boxes)[0], dtype=tf.int32),
        tf.shape(boxes)[1])  # [K]
    pooled = roi_align_flat(features, tf.reshape(boxes, [-1, 4]),
                            box_indices, output_size, stride, sampling_ratio,
                            aligned, implementation)
    return tf.reshape(  # [K, P, P, C] -> [B, N, P, P, C]
        pooled, [_static_or_dynamic(boxes, 0), _static_or_dynamic(boxes, 1),
                 output_size, output_size, _static_or_dynamic(features, 3)])


def roi_align_flat(features: tf.Tensor,
                   boxes: tf.Tensor,
                   box_indices: tf.Tensor,
                   output_size: int,
                   stride: float,
                   sampling_ratio: int = 2,
                   aligned: bool = True,
                   implementation: str = 'auto') -> tf.Tensor:
  """`roi_align` of K boxes, each from the image its index names.

  The form of `tf.image.crop_and_resize` and torchvision's `roi_align`:
  for boxes that are not laid out per image, such as a sample drawn from
  the whole batch, which `roi_align` would need a `[B, K, 4]` table for.

  Args:
    features: `[B, H, W, C]`, as for `roi_align`.
    boxes: `[K, 4]` boxes `[y1, x1, y2, x2]` in input-image pixels.
    box_indices: int `[K]`, the image in `[0, B)` of each box.
    output_size, stride, sampling_ratio, aligned, implementation: as for
      `roi_align`.

  Returns:
    `[K, P, P, C]` pooled features in `features.dtype`; row k is what
    `roi_align` gives for box k in image `box_indices[k]`.

  Raises:
    ValueError: as `roi_align`, and for `box_indices` that are not `[K]`.

  Example:

  >>> features = tf.reshape(tf.range(128, dtype=tf.float32), [2, 8, 8, 1])
  >>> boxes = tf.constant([[0., 0., 16., 16.], [4., 4., 20., 12.]])
  >>> roi_align_flat(features, boxes, [1, 0], output_size=2,
  ...                stride=4).shape
  TensorShape([2, 2, 2, 1])
  """
  check_roi_align_arguments(output_size, sampling_ratio, implementation)
  if not stride > 0:
    raise ValueError(f'stride must be positive, got {stride!r}.')
  if features.shape.rank != 4:
    raise ValueError(f'features must be [B, H, W, C], got {features.shape}.')
  if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
    raise ValueError(f'boxes must be [K, 4], got {boxes.shape}.')
  box_indices = checked_box_indices(box_indices, boxes)
  if sampling_ratio == 0:
    implementation = 'gather'  # the one adaptive sampling runs
  chosen = choose_implementation(implementation,
                                 current_context(implementation))
  _log_choice(implementation, chosen)
  implementation = chosen

  with tf.name_scope('roi_align_flat'):
    out_dtype = features.dtype
    box_indices = tf.cast(box_indices, tf.int32)
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    if sampling_ratio == 0:
      pooled = _pool_adaptively(tf.cast(features, tf.float32), box_indices,
                                boxes, output_size, stride, aligned)
      pooled.set_shape([boxes.shape[0], output_size, output_size,
                        features.shape[3]])
      return tf.cast(pooled, out_dtype)
    ys, xs = _sample_coordinates(boxes, stride, output_size * sampling_ratio,
                                 aligned)
    if implementation == 'gather':
      pooled = _pool_with_gather(tf.cast(features, tf.float32), box_indices,
                                 ys, xs, sampling_ratio)
    else:
      pooled = _pool_with_crop_and_resize(features, box_indices, ys, xs,
                                          sampling_ratio, implementation)
    pooled.set_shape([boxes.shape[0], output_size, output_size,
                      features.shape[3]])
    return tf.cast(pooled, out_dtype)
