"""Test session setup: quiet TensorFlow logs, deterministic seeds."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _seed_and_reset_policy():
  """Every test starts from the same seeds and the float32 Keras policy."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  np.random.seed(0)
  tf.random.set_seed(0)
  tf_keras.mixed_precision.set_global_policy('float32')
  yield
  tf_keras.mixed_precision.set_global_policy('float32')
