"""groie_tf.ops.roi_align and fpn_levels against the float64 references."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.ops import fpn_levels
from groie_tf.ops import roi_align
from tests.reference import roi_align as ref

# The two forward passes: crop_and_resize (what 'auto' runs on a CPU) and
# gather.
IMPLEMENTATIONS = ['auto', 'gather']
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `groie_tf.ops.roi_align` is the function; the module holds the rest.

# The feature gradients a CPU can run: the C++ kernel, the sparse product
# and the gather path's segment sum ('atomic' needs a GPU; its plumbing is
# tested below on boxes that cannot race).
GRADIENT_PATHS = ['kernel', 'sparse', 'gather']


@pytest.fixture(params=GRADIENT_PATHS)
def gradient_path(request):
  """`(path, implementation argument)`: the same name."""
  return request.param, request.param


def make_boxes(image_height, image_width):
  """Boxes `[2, 9, 4]` (y1x1y2x2, input pixels) covering the edge cases."""
  h, w = float(image_height), float(image_width)
  image0 = [
      [3.1, 5.7, 29.3, 21.9],        # ordinary, non-square
      [-9.0, -13.0, 17.0, 11.5],     # partly above and left of the image
      [h - 20.0, w - 7.0, h + 31.0, w + 9.0],  # partly below and right
      [h + 40.0, 2.0, h + 90.0, 30.0],         # wholly below the image
      [-70.0, -60.0, -30.0, -25.0],  # wholly above and left
      [12.3, 8.6, 12.9, 9.1],        # under one input pixel
      [10.0, 10.0, 10.0, 10.0],      # zero size
      [0.0, 0.0, 0.0, 0.0],          # Model Garden's zero padding
      [0.0, 0.0, h, w],              # the whole image
  ]
  image1 = [[y1 * 0.7 + 1.3, x1 * 0.9 + 0.4, y2 * 0.8 + 2.1, x2 * 0.6 + 5.0]
            for y1, x1, y2, x2 in image0]
  return np.array([image0, image1], np.float32)


def make_features(height, width, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((2, height, width, channels)).astype(np.float32)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('stride,height,width,output_size,sampling_ratio', [
    (4, 11, 9, 3, 2),
    (8, 6, 7, 7, 2),
    (16, 3, 4, 2, 1),
    (2, 9, 13, 4, 3),
])
def test_matches_reference(implementation, aligned, stride, height, width,
                           output_size, sampling_ratio):
  features = make_features(height, width)
  boxes = make_boxes(height * stride, width * stride)
  got = roi_align.roi_align(tf.constant(features), tf.constant(boxes), output_size,
                      stride, sampling_ratio, aligned, implementation)
  want = ref.roi_align(features, boxes, output_size, stride, sampling_ratio,
                       aligned)
  assert got.shape == want.shape
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_flat_boxes_are_pooled_from_the_image_their_index_names(
    implementation):
  """`roi_align_flat`: the edge-case boxes of both images, shuffled, some
  twice, each pooled from the image given with it (not the order's)."""
  stride, height, width = 8, 6, 7
  features = make_features(height, width)
  per_image = make_boxes(height * stride, width * stride)  # [2, 9, 4]
  rng = np.random.default_rng(5)
  images = rng.integers(0, 2, 24)
  rows = rng.integers(0, 9, 24)
  boxes = per_image[images, rows]  # [24, 4]
  got = roi_align.roi_align_flat(tf.constant(features), tf.constant(boxes),
                           tf.constant(images, tf.int32), 3, stride,
                           implementation=implementation)
  assert got.shape == (24, 3, 3, 3)
  want = np.stack([
      ref.roi_align(features[i:i + 1], box[None, None], 3, stride)[0, 0]
      for i, box in zip(images, boxes)])
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)
  # The other image's features give other numbers for most of them.
  swapped = roi_align.roi_align_flat(tf.constant(features), tf.constant(boxes),
                               tf.constant(1 - images, tf.int32), 3, stride,
                               implementation=implementation).numpy()
  assert (np.abs(swapped - want).max(axis=(1, 2, 3)) > 1e-3).sum() > 12


def test_flat_feature_gradient_matches_reference(gradient_path):
  """Boxes of both images, interleaved: the gradient of each lands in its
  own image (every gradient path)."""
  _, implementation = gradient_path
  stride, height, width = 4, 11, 9
  features = tf.constant(make_features(height, width, channels=20))
  per_image = make_boxes(height * stride, width * stride)
  images = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1], np.int32)
  boxes = per_image[images, np.arange(9)]
  upstream = np.random.default_rng(6).standard_normal((9, 2, 2, 20))
  with tf.GradientTape() as tape:
    tape.watch(features)
    pooled = roi_align.roi_align_flat(features, tf.constant(boxes), images, 2,
                                stride, implementation=implementation)
    loss = tf.reduce_sum(pooled * tf.constant(upstream, tf.float32))
  got = tape.gradient(loss, features).numpy()
  # The reference takes [B, N, 4]: box n in the row of its image, and a
  # zero upstream gradient in the other image's row.
  table = np.zeros((2, 9, 4))
  table[images, np.arange(9)] = boxes
  table_upstream = np.zeros((2, 9, 2, 2, 20))
  table_upstream[images, np.arange(9)] = upstream
  want = ref.roi_align_feature_gradient(tuple(features.shape), table,
                                        table_upstream, 2, stride)
  assert np.abs(want[0]).max() > 0.1 and np.abs(want[1]).max() > 0.1
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_boxes_outside_the_map_give_zeros_and_edge_boxes_do_not():
  """The clamp and the zero rule are what separate this from plain resize."""
  features = make_features(6, 7)
  boxes = make_boxes(6 * 8, 7 * 8)
  out = roi_align.roi_align(tf.constant(features), tf.constant(boxes), 7, 8).numpy()
  np.testing.assert_array_equal(out[:, 3:5], 0.0)  # wholly outside
  assert np.all(np.abs(out[:, 1]).sum(axis=(1, 2, 3)) > 0)  # partly outside


@pytest.mark.parametrize('aligned', [True, False])
def test_feature_gradient_matches_reference(gradient_path, aligned):
  _, implementation = gradient_path
  # 20 channels: the C++ kernel writes blocks of 16, so a partial block too.
  features = make_features(9, 8, channels=20)
  boxes = make_boxes(9 * 4, 8 * 4)
  upstream = np.random.default_rng(1).standard_normal(
      (2, boxes.shape[1], 3, 3, 20))
  features_t = tf.constant(features)
  with tf.GradientTape() as tape:
    tape.watch(features_t)
    pooled = roi_align.roi_align(features_t, tf.constant(boxes), 3, 4, 2, aligned,
                           implementation)
    loss = tf.reduce_sum(pooled * tf.constant(upstream, tf.float32))
  got = tape.gradient(loss, features_t).numpy()
  want = ref.roi_align_feature_gradient(features.shape, boxes, upstream, 3, 4,
                                        2, aligned)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


# TensorFlow's CPU CropAndResize gradient (which this project replaced) loses
# additions when threads add overlapping boxes into the same pixels. On the
# case of tests/roi_align_race.py (2048 boxes over one 10x9x32 map), with 2
# threads and two training processes busy on the same 2 cores, it was wrong
# in 27 of 50 runs, by 4-43% of the gradient's scale
# (`python -m tests.roi_align_race kernel 2 50 --tf_kernel`); a
# smaller case on an idle machine raced in 56 of 100. A race-free gradient
# is exact to float32 rounding (8e-6 of the scale: 2048 boxes add into few
# pixels) in every run. 40 runs miss a kernel that races that often with
# probability 0.46**40, about 3e-14. A race-free kernel also gives the same
# bits in every run, and the C++ kernel the same bits with 1 thread as with
# 2 (its threads split the output, each element is summed in one order).
RACE_RUNS = 40
RACE_TOLERANCE = 1e-4


def _race_report(path, threads, runs):
  result = subprocess.run(
      [sys.executable, '-m', 'tests.roi_align_race', path, str(threads),
       str(runs)],
      cwd=_ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=_ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['threads'] == threads
  return report


@pytest.mark.parametrize('path', GRADIENT_PATHS)
def test_feature_gradient_is_exact_in_every_run_with_two_threads(path):
  """The exact adjoint, run after run, with no determinism switch."""
  report = _race_report(path, threads=2, runs=RACE_RUNS)
  assert len(report['ours']) == RACE_RUNS
  assert max(report['ours']) < RACE_TOLERANCE, report
  if path != 'gather':
    assert len(report['digests']) == 1, report
  if path == 'kernel':
    assert _race_report(path, threads=1, runs=1)['digests'] == (
        report['digests'])


def test_samples_exactly_on_the_limits_read_the_edge(gradient_path):
  """mmcv keeps a sample at exactly -1 or H (W): it reads the edge pixel.
  Just beyond, it reads 0. Stride 1, one sample per bin: box [y1, y2] has its
  sample at y1 - 0.5 + (y2 - y1) / 2, so [-1, 0] samples row -1."""
  _, implementation = gradient_path
  height, width = 5, 6
  features = make_features(height, width)
  boxes = np.array([[
      [-1.0, 1.0, 0.0, 2.0],                      # row -1, column 1
      [height, 1.0, height + 1.0, 2.0],           # row H, column 1
      [1.0, -1.0, 2.0, 0.0],                      # row 1, column -1
      [1.0, width, 2.0, width + 1.0],             # row 1, column W
      [-1.0, -1.0, 0.0, 0.0],                     # the corner (-1, -1)
      [-1.02, 1.0, -0.02, 2.0],                   # row -1.02: outside
      [height + 0.02, 1.0, height + 1.02, 2.0],   # row H + 0.02: outside
  ]] * 2, np.float32)
  features_t = tf.constant(features)
  upstream = np.random.default_rng(2).standard_normal(
      (2, boxes.shape[1], 1, 1, 3))
  with tf.GradientTape() as tape:
    tape.watch(features_t)
    pooled = roi_align.roi_align(features_t, tf.constant(boxes), 1, 1, 1,
                           implementation=implementation)
  got = pooled.numpy()[:, :, 0, 0]
  f = features
  want = np.stack([f[:, 0, 1], f[:, height - 1, 1], f[:, 1, 0],
                   f[:, 1, width - 1], f[:, 0, 0], 0 * f[:, 0, 0],
                   0 * f[:, 0, 0]], 1)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  np.testing.assert_allclose(
      got, ref.roi_align(features, boxes, 1, 1, 1)[:, :, 0, 0], atol=1e-6)
  # The gradient reads the same taps: the edge pixels get these samples'
  # upstream, the pixels beyond get nothing.
  gradient = tape.gradient(pooled, features_t,
                           output_gradients=tf.constant(upstream, tf.float32))
  np.testing.assert_allclose(
      gradient.numpy(),
      ref.roi_align_feature_gradient(features.shape, boxes, upstream, 1, 1, 1),
      rtol=0, atol=1e-6)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_no_boxes(implementation):
  features = tf.constant(make_features(5, 6))
  out = roi_align.roi_align(features, tf.zeros([2, 0, 4]), 7, 4,
                      implementation=implementation)
  assert out.shape == (2, 0, 7, 7, 3)


def test_static_shape_is_kept_for_a_dynamic_batch():
  """Model Garden's heads read N, P and C from the static shape."""
  fn = tf.function(
      lambda f, b: roi_align.roi_align(f, b, 7, 4),
      input_signature=[tf.TensorSpec([None, 8, 8, 5]),
                       tf.TensorSpec([None, 12, 4])])
  concrete = fn.get_concrete_function()
  assert concrete.structured_outputs.shape.as_list() == [None, 12, 7, 7, 5]


def test_xla_auto_uses_gather_and_matches_reference():
  features = make_features(6, 7)
  boxes = make_boxes(6 * 8, 7 * 8)
  compiled = tf.function(lambda f, b: roi_align.roi_align(f, b, 7, 8),
                         jit_compile=True)
  got = compiled(tf.constant(features), tf.constant(boxes)).numpy()
  np.testing.assert_allclose(got, ref.roi_align(features, boxes, 7, 8),
                             rtol=0, atol=2e-5)


@pytest.mark.parametrize('dtype', [tf.bfloat16, tf.float16, tf.float64])
@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_output_keeps_the_feature_dtype(dtype, implementation):
  features = make_features(6, 7)
  boxes = make_boxes(6 * 8, 7 * 8)
  out = roi_align.roi_align(tf.cast(features, dtype), tf.constant(boxes), 3, 8,
                      implementation=implementation)
  assert out.dtype == dtype
  # bfloat16 keeps 8 bits of mantissa: the input rounding bounds the error.
  tolerance = {tf.bfloat16: 3e-2, tf.float16: 3e-3, tf.float64: 2e-5}[dtype]
  np.testing.assert_allclose(
      tf.cast(out, tf.float64).numpy(), ref.roi_align(features, boxes, 3, 8),
      rtol=0, atol=tolerance)


@pytest.mark.parametrize('kwargs,message', [
    (dict(sampling_ratio=0, implementation='sparse'), 'adaptive'),
    (dict(sampling_ratio=2.0), 'sampling_ratio'),
    (dict(sampling_ratio=-1), 'sampling_ratio'),
    (dict(output_size=0), 'output_size'),
    (dict(stride=0), 'stride'),
    (dict(implementation='cuda'), 'implementation'),
])
def test_invalid_arguments_raise(kwargs, message):
  args = dict(output_size=7, stride=4)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    roi_align.roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 1, 4]), **args)


def test_wrong_box_shape_raises():
  with pytest.raises(ValueError, match=r'boxes must be \[B, N, 4\]'):
    roi_align.roi_align(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4]), 7, 4)
  with pytest.raises(ValueError, match=r'boxes must be \[K, 4\]'):
    roi_align.roi_align_flat(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 2, 4]), [0], 7,
                       4)
  with pytest.raises(ValueError, match=r'box_indices must be \[K\]'):
    roi_align.roi_align_flat(tf.zeros([1, 4, 4, 1]), tf.zeros([3, 4]), [0, 0], 7,
                       4)


_CPU = dict(in_xla=False, has_gpu=False, op_determinism=False,
            kernel_loaded=True)
_GPU = dict(_CPU, has_gpu=True, kernel_loaded=False)


@pytest.mark.parametrize('requested,context,expected', [
    # What 'auto' runs, by device (the module doc's list).
    ('auto', _CPU, 'kernel'),
    ('auto', dict(_CPU, op_determinism=True), 'kernel'),
    ('auto', dict(_CPU, kernel_loaded=False), 'sparse'),
    ('auto', dict(_CPU, in_xla=True), 'gather'),
    ('auto', _GPU, 'atomic'),
    ('auto', dict(_GPU, op_determinism=True), 'gather'),
    ('auto', dict(_GPU, in_xla=True), 'gather'),
    # An explicit choice runs as asked where it can.
    ('kernel', _CPU, 'kernel'),
    ('sparse', _GPU, 'sparse'),
    ('gather', _CPU, 'gather'),
    ('atomic', _GPU, 'atomic'),
])
def test_the_implementation_chosen_for_each_device(requested, context,
                                                   expected):
  context = roi_align.TraceContext(**context)
  assert roi_align.choose_implementation(requested, context) == expected


@pytest.mark.parametrize('requested,context,message', [
    ('atomic', _CPU, 'needs a GPU'),
    ('atomic', dict(_GPU, op_determinism=True), 'no deterministic GPU'),
    ('kernel', _GPU, 'where a GPU is visible'),
    ('kernel', dict(_CPU, kernel_loaded=False), 'could not be built'),
    ('sparse', dict(_CPU, in_xla=True), 'XLA'),
    ('kernel', dict(_GPU, in_xla=True), 'XLA'),
])
def test_an_implementation_that_cannot_run_there_is_refused(
    requested, context, message):
  context = roi_align.TraceContext(**context)
  with pytest.raises(ValueError, match=message):
    roi_align.choose_implementation(requested, context)


def test_the_context_is_read_from_tensorflow():
  """On this CPU machine, outside XLA: the C++ kernel; inside a jit_compile
  function, XLA is seen (and the gather path compiles there)."""
  context = roi_align.current_context('auto')
  assert context == roi_align.TraceContext(**_CPU)
  assert not roi_align.current_context('sparse').kernel_loaded
  seen = []

  @tf.function(jit_compile=True)
  def pooled(features, boxes):
    seen.append(roi_align.current_context('auto'))
    return roi_align.roi_align(features, boxes, 3, 8)

  features, boxes = make_features(6, 7), make_boxes(48, 56)
  np.testing.assert_allclose(pooled(features, boxes).numpy(),
                             ref.roi_align(features, boxes, 3, 8),
                             rtol=0, atol=2e-5)
  assert seen[0].in_xla and not seen[0].kernel_loaded


def test_the_atomic_path_is_tensorflows_gradient_through_the_padding():
  """'atomic' is refused on a CPU, where TensorFlow's gradient races; its
  plumbing (CropAndResize's and the edge padding's registered gradients)
  is checked here on one box per image, which no two threads share."""
  features = make_features(6, 7)
  boxes = make_boxes(48, 56)[:, 1:2]  # partly outside: reads the padding
  upstream = np.random.default_rng(4).standard_normal(
      (2, 1, 3, 3, 3)).astype(np.float32)
  flat_boxes = tf.constant(boxes.reshape(-1, 4))
  ys, xs = roi_align._sample_coordinates(flat_boxes, 8.0, 6, True)
  features_t = tf.constant(features)
  with tf.GradientTape() as tape:
    tape.watch(features_t)
    pooled = roi_align._pool_with_crop_and_resize(
        features_t, tf.constant([0, 1]), ys, xs, 2, 'atomic')
  got = tape.gradient(pooled, features_t,
                      output_gradients=tf.constant(upstream.reshape(
                          2, 3, 3, 3)))
  want = ref.roi_align_feature_gradient(features.shape, boxes, upstream, 3,
                                        8, 2)
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)


def test_fpn_levels_match_reference():
  rng = np.random.default_rng(3)
  corners = rng.uniform(0, 900, (2, 40, 2))
  sizes = np.exp(rng.uniform(np.log(2), np.log(1200), (2, 40, 2)))
  boxes = np.concatenate([corners, corners + sizes], -1)[..., [0, 1, 2, 3]]
  # Exact powers of two of the canonical size, zero padding, negative area.
  special = np.array([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448],
                      [0, 0, 0, 0], [5, 5, 1, 9], [0, 0, 111.9, 112]],
                     np.float32)
  boxes = np.concatenate([boxes, np.broadcast_to(special, (2, 6, 4))], 1)
  got = fpn_levels.fpn_levels(tf.constant(boxes, tf.float32), 2, 5).numpy()
  want = ref.fpn_levels(boxes.astype(np.float32), 2, 5)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[0, -6:], [4, 3, 5, 2, 2, 2])
  assert set(got.ravel().tolist()) == {2, 3, 4, 5}


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
