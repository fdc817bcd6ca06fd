"""ContextBlock against the float64 loop reference, with every weight
random (the last convs too: at their zero init the block is the identity)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.layers import ContextBlock
from tests import layer_contract
from tests.reference import context_block as ref

FUSIONS = [('channel_add',), ('channel_mul',), ('channel_mul', 'channel_add')]


def reference_weights(layer):
  """The layer's weights in the reference's layout, read by name."""
  weights = {}
  if layer.pooling_type == 'att':
    weights['mask'] = layer.conv_mask.kernel.numpy()[:, 0]
    weights['mask_bias'] = float(layer.conv_mask.bias.numpy()[0])
  for fusion, transform in layer.transforms.items():
    weights[fusion] = {
        'conv1': transform.conv1.kernel.numpy(),
        'conv1_bias': transform.conv1.bias.numpy(),
        'gamma': transform.norm.gamma.numpy(),
        'beta': transform.norm.beta.numpy(),
        'conv2': transform.conv2.kernel.numpy(),
        'conv2_bias': transform.conv2.bias.numpy(),
    }
  return weights


def _random_block(x, dtype='float64', seed=0, **kwargs):
  layer = ContextBlock(dtype=dtype, **kwargs)
  layer(tf.constant(x, dtype))
  layer_contract.randomize_weights(layer, seed=seed, scale=0.5)
  return layer


@pytest.mark.parametrize('pooling_type', ['att', 'avg'])
@pytest.mark.parametrize('fusion_types', FUSIONS)
# At least 4 planes: LayerNorm maps any 2 values to +-1, which hides the
# context.
@pytest.mark.parametrize('shape,ratio', [((2, 3, 5, 16), 1 / 4),
                                         ((1, 6, 2, 12), 1 / 3),
                                         ((3, 1, 1, 4), 1.0)])
def test_matches_reference_in_float64(pooling_type, fusion_types, shape,
                                      ratio):
  x = np.random.default_rng(1).standard_normal(shape) * 2
  layer = _random_block(x, pooling_type=pooling_type,
                        fusion_types=fusion_types, ratio=ratio)
  assert {f: t.conv1.kernel.shape[-1] for f, t in layer.transforms.items()
         } == {f: int(shape[-1] * ratio) for f in fusion_types}
  want = ref.context_block(x, reference_weights(layer), pooling_type,
                           fusion_types)
  assert np.abs(want - x).max() > 0.1  # not the identity
  got = layer(tf.constant(x)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('pooling_type', ['att', 'avg'])
def test_matches_reference_in_float32(pooling_type):
  x = np.random.default_rng(2).standard_normal((2, 9, 6, 16))
  layer = _random_block(x, dtype='float32', pooling_type=pooling_type,
                        fusion_types=('channel_mul', 'channel_add'))
  want = ref.context_block(x, reference_weights(layer), pooling_type,
                           layer.fusion_types)
  got = layer(tf.constant(x, tf.float32)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(
      want).max())


def test_the_attention_pools_every_position_of_non_square_maps():
  """Each position's weight matters: changing one far corner of a 4x7 map
  changes the context, and the reference agrees."""
  x = np.random.default_rng(3).standard_normal((1, 4, 7, 8))
  layer = _random_block(x, ratio=1 / 2)
  moved = x.copy()
  moved[0, 3, 6] += 3.0
  before, after = (layer(tf.constant(v)).numpy() for v in (x, moved))
  # Every position of the output moves (the context changed), not only the
  # changed pixel.
  assert np.abs(after - before)[0, 0, 0].max() > 1e-3
  np.testing.assert_allclose(
      after, ref.context_block(moved, reference_weights(layer), 'att',
                               ('channel_add',)), rtol=1e-12, atol=1e-12)


def test_images_of_a_batch_are_independent():
  x = np.random.default_rng(4).standard_normal((3, 5, 4, 8))
  layer = _random_block(x, fusion_types=('channel_mul', 'channel_add'))
  batch = layer(tf.constant(x)).numpy()
  for i in range(3):
    np.testing.assert_allclose(batch[i], layer(tf.constant(x[i:i + 1]))[0],
                               rtol=1e-13, atol=1e-13)


def test_a_new_block_is_exactly_the_identity_with_mmcvs_init():
  channels = 512
  x = tf.random.normal([2, 6, 5, channels])
  layer = ContextBlock(fusion_types=('channel_mul', 'channel_add'))
  y = layer(x)
  # channel_mul at init multiplies by sigmoid(0) = 1/2: mmcv's zero init
  # makes only the 'channel_add' block the identity.
  np.testing.assert_array_equal(
      ContextBlock()(x).numpy(), x.numpy())
  np.testing.assert_allclose(y.numpy(), x.numpy() * 0.5, rtol=1e-7)
  mask = layer.conv_mask.kernel.numpy()
  assert mask.shape == (channels, 1)
  assert abs(mask.std() - math.sqrt(2 / channels)) < 0.1 * math.sqrt(
      2 / channels)
  assert not layer.conv_mask.bias.numpy().any()
  bound = 1 / math.sqrt(channels)
  for transform in layer.transforms.values():
    conv1 = transform.conv1.kernel.numpy()
    assert conv1.shape == (channels, 128)
    assert np.abs(conv1).max() <= bound and conv1.std() > 0.5 * bound / 2
    assert np.abs(transform.conv1.bias.numpy()).max() <= bound
    assert transform.conv1.bias.numpy().std() > 0.3 * bound
    assert not transform.conv2.kernel.numpy().any()
    assert not transform.conv2.bias.numpy().any()
    np.testing.assert_array_equal(transform.norm.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(transform.norm.beta.numpy(), 0.0)
    assert transform.norm.epsilon == 1e-5


@pytest.mark.parametrize('channels,params', [(512, 132_481), (1024, 527_105),
                                             (2048, 2_102_785)])
def test_parameters_per_block_at_ratio_one_quarter(channels, params):
  """2C^2/4 + 2C + 1 + 3C/4: mask conv, two convs, LayerNorm's affine."""
  layer = ContextBlock(ratio=1 / 4)
  layer(tf.zeros([1, 2, 3, channels]))
  assert layer.count_params() == params


@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_mixed_precision_pools_in_float32(policy):
  """Logits up to ~60 overflow float16's exp (above 11) unless the softmax
  runs in float32; the result follows the float64 reference to 16-bit
  precision, with every weight random."""
  x = np.random.default_rng(5).standard_normal((2, 6, 9, 16)) * 4
  reference_layer = _random_block(x, dtype='float64', seed=6)
  weights = reference_layer.get_weights()
  layer = ContextBlock(dtype=policy)
  layer(tf.constant(x, tf.float32))
  layer.set_weights(weights)
  assert layer.conv_mask.compute_dtype == 'float32'
  logits = x @ reference_weights(reference_layer)['mask']
  assert np.abs(logits).max() > 11
  got = layer(tf.constant(x, tf.float32))
  assert got.dtype == layer.compute_dtype
  want = ref.context_block(x, reference_weights(reference_layer), 'att',
                           ('channel_add',))
  assert np.abs(want - x).max() > 0.5
  tolerance = 2e-2 if policy == 'mixed_bfloat16' else 3e-3
  got = got.numpy().astype(np.float64)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, atol=tolerance * np.abs(want).max())


def test_layer_contract():
  layer = ContextBlock(ratio=0.5, fusion_types=('channel_mul', 'channel_add'))
  layer_contract.assert_map_layer_contract(layer,
                                           tf.random.normal([2, 5, 7, 8]))
  assert layer.get_config()['fusion_types'] == ['channel_mul', 'channel_add']


def test_float64_gradients():
  x = np.random.default_rng(7).standard_normal((2, 3, 4, 4))
  layer = _random_block(x, ratio=0.5,
                        fusion_types=('channel_mul', 'channel_add'))
  layer_contract.assert_float64_gradients(layer, tf.constant(x))


@pytest.mark.parametrize('kwargs,message', [
    ({'ratio': 0}, 'ratio must be in'),
    ({'ratio': 1.5}, 'ratio must be in'),
    ({'pooling_type': 'max'}, "pooling_type must be one of.*'max'"),
    ({'fusion_types': ()}, 'fusion_types must be a non-empty'),
    ({'fusion_types': ('channel_add', 'channel_add')}, 'without repeats'),
    ({'fusion_types': ('add',)}, "'add'"),
])
def test_bad_arguments_are_named_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ContextBlock(**kwargs)


def test_a_ratio_leaving_no_plane_is_named_at_build():
  with pytest.raises(ValueError, match='leaves no plane for 3 channels'):
    ContextBlock(ratio=0.25)(tf.zeros([1, 2, 2, 3]))


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
