"""NonLocal2D against the float64 loop reference, with a non-zero conv_out."""

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.layers import NonLocal2D
from tests import layer_contract
from tests.reference import attention as ref


def reference_weights(layer):
  def kernel(conv):
    return conv.kernel.numpy().reshape(-1, conv.kernel.shape[-1])
  return {
      'theta': kernel(layer.theta), 'theta_bias': layer.theta.bias.numpy(),
      'phi': kernel(layer.phi), 'phi_bias': layer.phi.bias.numpy(),
      'g': kernel(layer.g), 'g_bias': layer.g.bias.numpy(),
      'out': kernel(layer.conv_out), 'out_bias': layer.conv_out.bias.numpy(),
  }


@pytest.mark.parametrize('reduction,use_scale,shape', [
    (2, True, (2, 7, 7, 8)),
    (2, False, (2, 5, 6, 8)),
    (3, True, (1, 4, 9, 6)),
    (16, True, (2, 3, 3, 8)),  # C // reduction = 0 channels -> 1
])
def test_matches_reference(reduction, use_scale, shape):
  x = np.random.default_rng(0).standard_normal(shape)
  layer = NonLocal2D(reduction=reduction, use_scale=use_scale,
                     dtype='float64')
  layer(tf.constant(x))
  layer_contract.randomize_weights(layer, scale=0.5)
  got = layer(tf.constant(x)).numpy()
  want = ref.non_local(x, reference_weights(layer), use_scale)
  assert np.abs(want - x).max() > 1e-2
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_starts_as_identity_with_distinct_projections():
  layer = NonLocal2D()
  x = tf.random.normal([2, 7, 7, 16])
  np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
  assert layer.theta.kernel.shape == (16, 8)
  # Each projection draws its own initial values.
  assert not np.allclose(layer.theta.kernel.numpy(), layer.phi.kernel.numpy())
  assert 0.005 < np.std(layer.theta.kernel.numpy()) < 0.02


def test_float64_gradients():
  x = tf.constant(np.random.default_rng(1).standard_normal((1, 3, 4, 4)))
  layer = NonLocal2D(dtype='float64')
  layer(x)
  layer_contract.randomize_weights(layer, scale=0.5)
  layer_contract.assert_float64_gradients(layer, x)


def test_layer_contract():
  layer_contract.assert_map_layer_contract(NonLocal2D(),
                                           tf.random.normal([2, 7, 7, 8]))


def test_invalid_reduction_raises():
  with pytest.raises(ValueError, match='reduction'):
    NonLocal2D(reduction=0)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
