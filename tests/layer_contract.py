"""Checks every groie_tf layer must pass (keras-hub's shared layer test).

Each helper takes a factory `make_layer(**overrides)` and example inputs, so
the same contract is applied to GeneralizedAttention, NonLocal2D and GRoIE.
"""

import numpy as np
import tensorflow as tf
import tf_keras


def randomize_weights(layer, seed=0, scale=0.3):
  """Sets every weight to a random value, `gamma` included.

  Zero-initialised weights (attention's gamma, non-local's output conv)
  make a block the identity and would hide any bug behind it.
  """
  rng = np.random.default_rng(seed)
  layer.set_weights([
      (scale * rng.standard_normal(w.shape)).astype(w.dtype.as_numpy_dtype)
      for w in layer.weights
  ])


def assert_serialization_round_trip(layer, call):
  """A layer rebuilt from its config and weights computes the same output.

  `call(layer)` returns the layer's output tensor on fixed inputs.
  """
  expected = call(layer).numpy()
  config = tf_keras.layers.serialize(layer)
  clone = tf_keras.layers.deserialize(config)
  call(clone)  # builds the weights
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == layer.get_config()
  np.testing.assert_allclose(call(clone).numpy(), expected, rtol=1e-6,
                             atol=1e-6)


def assert_xla_matches_eager(layer, call):
  expected = call(layer).numpy()
  compiled = tf.function(lambda: call(layer), jit_compile=True)
  np.testing.assert_allclose(compiled().numpy(), expected, rtol=1e-5,
                             atol=1e-5)


def assert_weight_gradients_match_finite_differences(layer, call, seed=0,
                                                    eps=1e-6, rtol=1e-6):
  """Float64 check of d/dw sum(U * call()) for every trainable weight.

  The tape gradient, dotted with a random direction V, must equal the
  central difference of the scalar along V.
  """
  rng = np.random.default_rng(seed)
  out = call()
  upstream = tf.constant(rng.standard_normal(out.shape), out.dtype)
  scalar = lambda: tf.reduce_sum(upstream * call())
  for weight in layer.trainable_weights:
    assert weight.dtype == tf.float64, 'run this check on a float64 layer'
    with tf.GradientTape() as tape:
      value = scalar()
    grad = tf.convert_to_tensor(tape.gradient(value, weight)).numpy()
    direction = rng.standard_normal(weight.shape)
    original = weight.numpy()
    weight.assign(original + eps * direction)
    plus = scalar().numpy()
    weight.assign(original - eps * direction)
    minus = scalar().numpy()
    weight.assign(original)
    numerical = (plus - minus) / (2 * eps)
    analytic = float(np.sum(grad * direction))
    np.testing.assert_allclose(analytic, numerical, rtol=rtol,
                               atol=rtol * max(1.0, abs(numerical)),
                               err_msg=weight.name)


def assert_float64_gradients(layer, x):
  """Input Jacobian and weight gradients of a float64 layer, numerically."""
  theoretical, numerical = tf.test.compute_gradient(layer, [x])
  np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6,
                             atol=1e-6)
  assert_weight_gradients_match_finite_differences(layer, lambda: layer(x))


def assert_gradients_reach_everything(layer, loss_fn, inputs):
  """Every trainable weight and every input gets a finite, non-zero grad."""
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    loss = loss_fn()
  grads = tape.gradient(loss, [layer.trainable_weights, inputs])
  for weight, grad in zip(layer.trainable_weights, grads[0]):
    assert grad is not None, f'no gradient reaches {weight.name}'
    grad = tf.convert_to_tensor(grad).numpy()
    assert np.all(np.isfinite(grad)), weight.name
    assert np.any(grad != 0), f'zero gradient at {weight.name}'
  for grad in tf.nest.flatten(grads[1]):
    assert grad is not None and np.any(tf.convert_to_tensor(grad).numpy())


def assert_map_layer_contract(layer, x):
  """The whole contract of a layer from `[N, H, W, C]` maps to maps, with
  random weights: serialisation, XLA, gradients everywhere, empty batch."""
  layer(x)
  randomize_weights(layer)
  call = lambda l: l(x)
  assert_serialization_round_trip(layer, call)
  assert_xla_matches_eager(layer, call)
  assert_gradients_reach_everything(
      layer, lambda: tf.reduce_sum(layer(x)**2), x)
  empty = tf.zeros([0] + x.shape.as_list()[1:], x.dtype)
  assert layer(empty).shape == empty.shape
