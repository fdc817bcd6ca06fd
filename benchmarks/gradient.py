"""RoIAlign's feature gradient over 4 levels, by three kernels, one process.

- `TensorFlow CropAndResizeGradImage (races)`: TF's own gradient of the
  same crop_and_resize samples, which the project no longer uses (its CPU
  threads lose additions, docs/numerics.md): the speed to match;
- `sparse product`: the pure-TensorFlow exact gradient (the fallback);
- `C++ kernel`: `groie_tf.ops.native`, the exact default on a CPU.

Only the backward pass is timed: the upstream gradient is given. Cases: the
paper's box branch (2 x 512 RoIs, 7x7, `--channels` of an `--image_size`
FPN: 256 and 1024 px by default) and the built-in model's box and mask
branches (8 x 64 RoIs at 7x7 and 8 x 16 at 14x14, 48 channels,
`--e2e_image_size`: 256 px on a CPU). `ratio` is over TensorFlow's kernel, timed in
the same rounds. float32, no XLA.
"""


import numpy as np
import tensorflow as tf

from benchmarks import inputs
from groie_tf.ops import native
from groie_tf.ops import roi_align

_LEVELS = (2, 3, 4, 5)
_RATIO = 2
_TENSORFLOW = 'TensorFlow CropAndResizeGradImage (races)'



def _cases(setup):
  """(name, images, RoIs per image, output size, channels, image size)."""
  return (
      ('paper box', 2, 512, 7, setup.channels, setup.image_size),
      ('built-in box', 8, 64, 7, 48, setup.e2e_image_size),
      ('built-in mask', 8, 16, 14, 48, setup.e2e_image_size),
  )


def _tensorflow_gradient(features, boxes, ys, xs, upstream):
  """TF's gradient of the crop_and_resize samples `roi_align` takes, op by
  op as its registered gradients run: average pooling's, CropAndResize's,
  the padding's."""
  del boxes  # the samples are given
  num_samples = ys.shape[1]
  sample_grads = tf.raw_ops.AvgPoolGrad(
      orig_input_shape=[upstream.shape[0], num_samples, num_samples,
                        upstream.shape[3]],
      grad=upstream, ksize=[1, _RATIO, _RATIO, 1],
      strides=[1, _RATIO, _RATIO, 1], padding='VALID')
  shape = tf.shape(features)
  padded = tf.raw_ops.CropAndResizeGradImage(
      grads=sample_grads, boxes=roi_align.padded_crop_boxes(ys, xs, shape),
      box_ind=_box_indices(upstream, features),
      image_size=shape + [0, 2, 2, 0], T=tf.float32)
  return tf.raw_ops.MirrorPadGrad(
      input=padded, paddings=[[0, 0], [1, 1], [1, 1], [0, 0]],
      mode='SYMMETRIC')


def _box_indices(upstream, features):
  per_image = upstream.shape[0] // features.shape[0]
  return tf.repeat(tf.range(features.shape[0]), per_image)


def _sparse_gradient(features, boxes, ys, xs, upstream):
  del boxes
  shape = tf.shape(features)
  operator = roi_align._transposed_operator(
      _box_indices(upstream, features), ys, xs, shape, _RATIO)
  return tf.sparse.sparse_dense_matmul(
      operator, tf.reshape(upstream, [-1, shape[3]]))


def _native_gradient(features, boxes, ys, xs, upstream):
  del boxes
  return native.load().groie_roi_align_grad(
      upstream, ys, xs, _box_indices(upstream, features), tf.shape(features),
      sampling_ratio=_RATIO)


def run(setup, precision):
  if precision != 'float32':
    return []
  if native.load() is None:
    return [{'section': 'gradient', 'case': name, 'variant': 'C++ kernel',
             'precision': precision, 'xla': False,
             'skipped': 'the C++ kernel did not build (see the log)'}
            for name, *_ in _cases(setup)]
  kernels = {_TENSORFLOW: _tensorflow_gradient,
             'sparse product': _sparse_gradient,
             'C++ kernel': _native_gradient}
  rows = []
  for name, batch, per_image, size, channels, image_size in _cases(setup):
    features = inputs.fpn_features(batch, image_size, channels, tf.float32)
    boxes = tf.reshape(inputs.rois(batch, per_image, image_size), [-1, 4])
    rng = np.random.default_rng(0)
    upstream = tf.constant(rng.standard_normal(
        [batch * per_image, size, size, channels]).astype(np.float32))
    coordinates = {
        level: roi_align._sample_coordinates(boxes, 2.0**level,
                                              size * _RATIO, True)
        for level in _LEVELS}
    functions = {
        variant: tf.function(
            lambda kernel=kernel: [kernel(features[str(level)], boxes,
                                          *coordinates[level], upstream)
                                   for level in _LEVELS])
        for variant, kernel in kernels.items()}
    with tf.device(setup.device):
      timed = setup.time(functions)
    case = (f'{name}: {batch}x{per_image} RoIs, {size}x{size}, '
            f'C={channels}, 4 levels, backward')
    for variant in kernels:
      rows.append({'section': 'gradient', 'case': case, 'variant': variant,
                   'precision': precision, 'xla': False,
                   'median_ms': 1e3 * timed[variant],
                   'ratio': timed[variant] / timed[_TENSORFLOW]})
  return rows
