"""RoIAlign's feature gradient, many times, with many overlapping boxes.

    python -m tests.roi_align_race IMPLEMENTATION THREADS RUNS [--tf_kernel]

Run in its own process by tests/test_roi_align.py: TensorFlow's intra-op
thread count can only be set before it starts, which a pytest session has
done long before. No determinism switch is set: this is the gradient every
user gets. Prints one JSON line: the worst relative error of each run
against the float64 adjoint of `tests/reference/roi_align.py`; with
`--tf_kernel`, also of TF's own CropAndResize gradient of the same samples
(the kernel this project no longer uses: how often it races here).
IMPLEMENTATION is one of `roi_align`'s (kernel, sparse, gather, ...). It
also prints the distinct SHA-256 digests of the runs' gradients (one
digest: bit-for-bit the same every run).
"""

import hashlib
import json
import sys

import numpy as np
import tensorflow as tf

# Set before anything runs, or TensorFlow refuses.
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[2]))

# pylint: disable=g-import-not-at-top,wrong-import-position
from groie_tf.ops import roi_align
from tests.reference import roi_align as ref

OUTPUT_SIZE, STRIDE, SAMPLING_RATIO = 7, 4, 2


def make_case(num_boxes=2048, channels=32, seed=0):
  """One 10x9 map and `num_boxes` boxes that all cover its centre: long
  kernel calls, so that the threads overlap even on a busy machine."""
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((1, 10, 9, channels)).astype(np.float32)
  corners = rng.uniform(-4.0, 12.0, (1, num_boxes, 2))
  sizes = rng.uniform(14.0, 30.0, (1, num_boxes, 2))
  boxes = np.concatenate([corners, corners + sizes], -1).astype(np.float32)
  upstream = rng.standard_normal(
      (1, num_boxes, OUTPUT_SIZE, OUTPUT_SIZE, channels)).astype(np.float32)
  return features, boxes, upstream


def relative_errors(gradient_fn, want, runs, digests=None):
  """The worst relative error of each of `runs` calls; each gradient's
  digest is added to `digests` if given."""
  scale = np.abs(want).max()
  errors = []
  for _ in range(runs):
    got = gradient_fn().numpy()
    errors.append(float(np.abs(got - want).max() / scale))
    if digests is not None:
      digests.add(hashlib.sha256(got.tobytes()).hexdigest())
  return errors


def main():
  implementation, runs = sys.argv[1], int(sys.argv[3])
  features, boxes, upstream = make_case()
  want = ref.roi_align_feature_gradient(features.shape, boxes, upstream,
                                        OUTPUT_SIZE, STRIDE, SAMPLING_RATIO)
  features_t = tf.constant(features)
  boxes_t, upstream_t = tf.constant(boxes), tf.constant(upstream)

  def ours():
    with tf.GradientTape() as tape:
      tape.watch(features_t)
      pooled = roi_align.roi_align(features_t, boxes_t, OUTPUT_SIZE, STRIDE,
                             SAMPLING_RATIO, implementation=implementation)
    return tape.gradient(pooled, features_t, output_gradients=upstream_t)

  def tensorflows():
    """TF's own CropAndResize gradient of the same samples."""
    size = OUTPUT_SIZE * SAMPLING_RATIO
    # The normalised first and last samples our crop_and_resize path uses:
    # the reference's rule (aligned, stride 4), padded by one pixel.
    start = boxes[0, :, :2] / STRIDE - 0.5
    extent = boxes[0, :, 2:] / STRIDE - 0.5 - start
    limits = np.array(features.shape[1:3], np.float32) + 1
    normalised = np.concatenate(
        [(start + 0.5 * extent / size + 1) / limits,
         (start + (size - 0.5) * extent / size + 1) / limits], 1)
    with tf.GradientTape() as tape:
      tape.watch(features_t)
      padded = tf.pad(features_t, [[0, 0], [1, 1], [1, 1], [0, 0]],
                      'SYMMETRIC')
      samples = tf.image.crop_and_resize(
          padded, normalised, tf.zeros([boxes.shape[1]], tf.int32),
          [size, size])
      pooled = tf.nn.avg_pool2d(samples, SAMPLING_RATIO, SAMPLING_RATIO,
                                'VALID')
    return tape.gradient(pooled, features_t, output_gradients=upstream_t[0])

  digests = set()
  report = {'threads': tf.config.threading.get_intra_op_parallelism_threads(),
            'ours': relative_errors(ours, want, runs, digests)}
  report['digests'] = sorted(digests)
  if '--tf_kernel' in sys.argv[4:]:
    report['tensorflow_kernel'] = relative_errors(tensorflows, want, runs)
  print(json.dumps(report))


if __name__ == '__main__':
  main()
