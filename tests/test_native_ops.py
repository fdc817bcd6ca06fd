"""The C++ RoIAlign gradient kernel: its errors, and what runs without it.

Its numbers are tested with the other gradient paths in test_roi_align.py.
"""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.ops import native
from groie_tf.ops import roi_align
from tests.reference import roi_align as ref

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh_loader():
  """`native.load()` forgets its result before and after the test."""
  native.load.cache_clear()
  yield
  native.load.cache_clear()


def _kernel_inputs(num_boxes=3, size=2, ratio=2, channels=5):
  rng = np.random.default_rng(0)
  samples = size * ratio
  return dict(
      upstream=tf.constant(rng.standard_normal(
          (num_boxes, size, size, channels)), tf.float32),
      ys=tf.constant(rng.uniform(0, 6, (num_boxes, samples)), tf.float32),
      xs=tf.constant(rng.uniform(0, 7, (num_boxes, samples)), tf.float32),
      box_indices=tf.constant([0, 1, 1][:num_boxes], tf.int32),
      feature_shape=tf.constant([2, 6, 7, channels], tf.int32),
      sampling_ratio=ratio)


@pytest.mark.parametrize('change,message', [
    ({'box_indices': tf.constant([0, 2, 1], tf.int32)},
     r'box_indices\[1\] = 2 is not an image of the 2'),
    ({'feature_shape': tf.constant([2, 6, 7, 4], tf.int32)},
     r'feature_shape has 4 channels, upstream 5'),
    ({'sampling_ratio': 3}, r'ys and xs must be \[3, 6\]'),
    ({'feature_shape': tf.constant([2, 0, 7, 5], tf.int32)},
     r'feature_shape must be positive'),
])
def test_bad_kernel_inputs_are_named(change, message):
  kernel = native.load()
  assert kernel is not None, 'the C++ kernel did not build here'
  inputs = dict(_kernel_inputs(), **change)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    kernel.groie_roi_align_grad(**inputs)


def test_no_boxes_give_a_zero_gradient_of_the_features_shape():
  kernel = native.load()
  inputs = _kernel_inputs()
  inputs.update(upstream=inputs['upstream'][:0], ys=inputs['ys'][:0],
                xs=inputs['xs'][:0], box_indices=inputs['box_indices'][:0])
  grad = kernel.groie_roi_align_grad(**inputs).numpy()
  assert grad.shape == (2, 6, 7, 5) and not grad.any()


def _gradient_is_exact():
  rng = np.random.default_rng(3)
  features = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
  boxes = rng.uniform(-8, 40, (2, 5, 4)).astype(np.float32)
  boxes[..., 2:] += boxes[..., :2]
  upstream = rng.standard_normal((2, 5, 3, 3, 3))
  features_t = tf.constant(features)
  with tf.GradientTape() as tape:
    tape.watch(features_t)
    pooled = roi_align.roi_align(features_t, tf.constant(boxes), 3, 4, 2,
                           implementation='auto')
  got = tape.gradient(pooled, features_t,
                      output_gradients=tf.constant(upstream, tf.float32))
  want = ref.roi_align_feature_gradient(features.shape, boxes, upstream, 3,
                                        4, 2)
  np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)


def test_without_a_compiler_the_exact_fallback_runs_and_says_why(
    fresh_loader, monkeypatch, tmp_path, caplog):
  monkeypatch.setenv('GROIE_TF_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert native.load() is None
  assert 'the exact but slower TensorFlow gradient runs' in caplog.text
  assert 'false -shared' in caplog.text  # the failed command
  context = roi_align.current_context('auto')
  assert not context.kernel_loaded
  assert roi_align.choose_implementation('auto', context) == 'sparse'
  _gradient_is_exact()


def test_an_unwritable_cache_builds_for_the_process(tmp_path):
  """A cache path that cannot be a directory (a sandbox's read-only home):
  the library is built in a temporary directory and used. In a new process:
  TensorFlow registers an op once per process."""
  blocked = tmp_path / 'a_file'
  blocked.write_text('')
  code = ('from absl import logging\n'
          'logging.set_verbosity(logging.INFO)\n'
          'from groie_tf.ops import native\n'
          'from tests import test_native_ops\n'
          'assert native.load() is not None\n'
          'test_native_ops._gradient_is_exact()\n')
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=_ROOT, capture_output=True,
      text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=_ROOT, GROIE_TF_CACHE=str(blocked)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'RoIAlign gradient: the C++ kernel /' in result.stderr
  assert str(blocked) not in result.stderr


def test_a_saved_model_does_not_need_the_kernel(tmp_path):
  """TensorFlow saves custom gradients with a SavedModel: they must be the
  portable ones, or loading needs this library (TF Serving cannot)."""

  class Pooling(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 2])])
    def __call__(self, features):
      return roi_align.roi_align(features, tf.constant([[[0., 0., 16., 16.]]]), 2,
                           4, implementation='kernel')

  assert native.load() is not None
  pooling = Pooling()
  # Traced before the save, as the export module's serving function is:
  # the gradient is still chosen when the save traces it.
  pooling(tf.zeros([1, 8, 8, 2]))
  tf.saved_model.save(pooling, str(tmp_path / 'saved'))
  graph = (tmp_path / 'saved' / 'saved_model.pb').read_bytes()
  assert b'CropAndResize' in graph  # the forward and its saved gradient...
  assert b'SparseTensorDenseMatMul' in graph
  assert b'GroieRoiAlignGrad' not in graph  # ...without the C++ op
  # Training in this process still gets the C++ kernel.
  assert roi_align.choose_implementation(
      'kernel', roi_align.current_context('kernel')) == 'kernel'


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
