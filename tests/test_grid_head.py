"""GridHead against a float64 torch-convention forward, every weight random."""

import math

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.layers.grid_head import GridHead
from groie_tf.layers.grid_head import neighbour_points
from tests import layer_contract
from tests.reference import grid_head as ref


def _grid_neighbours():
  """{point: set of 4-neighbours}, from the points' (column, row) places:
  point j is column j // 3, row j % 3."""
  place = {j: (j // 3, j % 3) for j in range(9)}
  return {i: {j for j in range(9)
              if abs(place[i][0] - place[j][0]) + abs(place[i][1] -
                                                      place[j][1]) == 1}
          for i in range(9)}


def _torch_weights(head):
  """The head's weights in torch's layouts, found by layer name."""
  by_name = {l.name: l for l in head._flatten_layers(include_self=False)}

  def conv(layer):  # [kh, kw, in, out] -> [out, in, kh, kw]
    return (np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)),
            layer.bias.numpy())

  def deconv(layer):  # [kh, kw, out, in] -> [in, out, kh, kw]
    return (np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)),
            layer.bias.numpy())

  def norm(layer):
    return layer.gamma.numpy(), layer.beta.numpy()

  weights = {'convs': [], 'first_order': {}, 'second_order': {}}
  for k in range(head.num_convs):
    weights['convs'].append(conv(by_name[f'conv{k}']) +
                            norm(by_name[f'conv{k}_norm']))
  for i, neighbours in _grid_neighbours().items():
    for j in neighbours:
      for order in ('first_order', 'second_order'):
        depthwise = by_name[f'{order}_{i}_from_{j}_depthwise']
        dw = np.transpose(depthwise.depthwise_kernel.numpy(), (2, 3, 0, 1))
        weights[order][(i, j)] = (dw, depthwise.bias.numpy()) + conv(
            by_name[f'{order}_{i}_from_{j}_pointwise'])
  weights['deconv1'] = [deconv(by_name[f'deconv1_{p}']) for p in range(9)]
  weights['deconv2'] = [deconv(by_name[f'deconv2_{p}']) for p in range(9)]
  weights['deconv1_norm'] = norm(by_name['deconv1_norm'])
  return weights


def test_the_grid_has_24_directed_edges_between_4_neighbours():
  edges = {(i, j) for i, ns in enumerate(neighbour_points()) for j in ns}
  assert len(edges) == 24
  assert edges == {(i, j) for i, ns in _grid_neighbours().items()
                   for j in ns}


@pytest.mark.parametrize('num_convs,point_channels,norm_groups', [
    (2, 4, 36), (1, 2, 9)])
def test_matches_the_float64_reference(num_convs, point_channels,
                                       norm_groups):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 14, 14, 5))
  head = GridHead(num_convs=num_convs, point_channels=point_channels,
                  norm_groups=norm_groups, dtype='float64')
  head(tf.constant(x), training=True)
  layer_contract.randomize_weights(head, seed=1, scale=0.4)
  got = head(tf.constant(x), training=True)
  weights = _torch_weights(head)
  neighbours = {i: sorted(ns) for i, ns in _grid_neighbours().items()}
  for r in range(2):
    want = ref.grid_head(np.transpose(x[r], (2, 0, 1)), weights, neighbours,
                         norm_groups)
    for key in ('fused', 'unfused'):
      np.testing.assert_allclose(
          np.transpose(got[key].numpy()[r], (2, 0, 1)), want[key],
          rtol=1e-10, atol=1e-10, err_msg=key)
    assert np.abs(want['fused'] - want['unfused']).max() > 1e-2
  evaluated = head(tf.constant(x), training=False)
  np.testing.assert_array_equal(evaluated['unfused'].numpy(),
                                evaluated['fused'].numpy())
  np.testing.assert_allclose(evaluated['fused'].numpy(), got['fused'].numpy(),
                             rtol=1e-12)


def test_mmdetections_size_and_initialisation():
  """23,123,145 weights at 256 input channels; He-normal fan_out convs,
  depth-wise std sqrt(2 / 1600), transposed convs normal(0.001), the
  heatmaps' 1% prior, GroupNorm epsilon 1e-5."""
  head = GridHead()
  out = head(tf.zeros([1, 14, 14, 256]), training=False)
  assert head.count_params() == 23_123_145
  by_name = {l.name: l for l in head._flatten_layers(include_self=False)}
  std = lambda v: float(np.std(v.numpy()))
  assert std(by_name['conv1'].kernel) == pytest.approx(
      math.sqrt(2 / (9 * 576)), rel=0.02)
  assert std(by_name['first_order_0_from_1_depthwise'].depthwise_kernel) == (
      pytest.approx(math.sqrt(2 / 1600), rel=0.1))
  assert std(by_name['first_order_0_from_1_pointwise'].kernel) == (
      pytest.approx(math.sqrt(2 / 64), rel=0.1))
  assert std(by_name['deconv1_3'].kernel) == pytest.approx(0.001, rel=0.05)
  np.testing.assert_allclose(by_name['deconv2_0'].bias.numpy(),
                             -math.log(99), rtol=1e-6)
  assert by_name['conv0_norm'].groups == 36
  assert by_name['deconv1_norm'].groups == 9
  assert all(l.epsilon == 1e-5 for l in by_name.values()
             if 'norm' in l.name)
  # Zero input, zero conv biases: every logit is the prior's.
  np.testing.assert_allclose(out['fused'].numpy(), -math.log(99), rtol=1e-5)


def test_layer_contract():
  x = tf.random.normal([2, 14, 14, 6])
  head = GridHead(num_convs=2, point_channels=4)
  call = lambda l: l(x, training=True)['fused']
  head(x)
  layer_contract.randomize_weights(head, scale=0.3)
  layer_contract.assert_serialization_round_trip(head, call)
  layer_contract.assert_xla_matches_eager(head, call)
  layer_contract.assert_gradients_reach_everything(
      head, lambda: tf.reduce_sum(
          sum(v**2 for v in head(x, training=True).values())), x)


def test_no_rois():
  """No RoI, eagerly and with a count known only at run time (an exported
  model's detections): empty heatmaps, and the count's rows otherwise."""
  head = GridHead(num_convs=2, point_channels=2, norm_groups=9)
  out = head(tf.zeros([0, 14, 14, 4]), training=True)
  assert {k: v.shape for k, v in out.items()} == {
      'fused': (0, 28, 28, 9), 'unfused': (0, 28, 28, 9)}
  fn = tf.function(lambda x: head(x)['fused'],
                   input_signature=[tf.TensorSpec([None, 14, 14, 4])])
  assert fn(tf.zeros([0, 14, 14, 4])).shape == (0, 28, 28, 9)
  x = tf.random.normal([3, 14, 14, 4])
  np.testing.assert_allclose(fn(x).numpy(), head(x)['fused'].numpy(),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kwargs,message', [
    ({'num_convs': 0}, 'num_convs must be'),
    ({'point_channels': 0}, 'point_channels must be'),
    ({'point_channels': 64, 'norm_groups': 10}, r'norm_groups \(10\) must '
     'divide the 576'),
])
def test_bad_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    GridHead(**kwargs)


def test_features_of_another_size_are_refused():
  with pytest.raises(ValueError, match='14x14 RoI features, got'):
    GridHead(num_convs=1, point_channels=2, norm_groups=9)(
        tf.zeros([1, 7, 7, 4]))


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
