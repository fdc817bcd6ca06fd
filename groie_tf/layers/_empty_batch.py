"""Layers on a batch of RoIs that may be empty: the one rule of groie_tf.

With oneDNN's CPU kernels (`groie_tf.training.cpu_kernels` says whether
TensorFlow chose them), tf_keras's `Conv2D` mishandles a batch of 0 maps
when its `filters` differ from the input's channels: a traced graph
silently gets the input's channel count, and an eager call fails in
`BiasAdd` ("Must provide as many biases as the last dimension"). A batch
of 0 RoIs happens whenever their count is only known at run time: GRoIE's
RoIs of one level, a batch without detections. `Dense`, `DepthwiseConv2D`,
`Conv2DTranspose`, `GroupNormalization` and `LayerNormalization` handle
it; Eigen's kernels handle `Conv2D` too.

So every layer of groie_tf that runs a sublayer on RoI maps does one of two
things:

* a 1x1 convolution is a `pointwise` layer: `Dense` on the channel axis,
  the same arithmetic, which needs no guard;
* anything else runs through `call_on_batch`, which hands the sublayer one
  zero row when, and only when, the batch is empty.
"""

import tensorflow as tf
import tf_keras

__all__ = ['pointwise', 'call_on_batch']


def pointwise(filters: int, name: str, **kwargs) -> tf_keras.layers.Dense:
  """A 1x1 convolution to `filters` channels, written as `Dense` on the
  channel axis (kernel `[C, filters]`): exact on an empty batch."""
  return tf_keras.layers.Dense(filters, name=name, **kwargs)


def call_on_batch(module, inputs: tf.Tensor, **kwargs):
  """`module(inputs, **kwargs)` for `[K, ...]` inputs, K possibly 0.

  A K known to be positive at trace time calls `module` as it is. Otherwise
  a zero row is appended when K is 0 at run time (a no-op pad otherwise),
  and the outputs' first K rows are returned: the batch `module` sees is
  never empty, and a non-empty one is the inputs themselves.

  Args:
    module: a callable on `[K, ...]` tensors, returning a tensor or a
      nested structure of `[K, ...]` tensors.
    inputs: the `[K, ...]` batch.
    **kwargs: passed to `module`.

  Returns:
    What `module` returns, each tensor with K rows.
  """
  static = inputs.shape[0]
  if static is not None and static > 0:
    return module(inputs, **kwargs)
  count = tf.shape(inputs)[0]
  extra = tf.cast(tf.equal(count, 0), tf.int32)
  padding = [[0, extra]] + [[0, 0]] * (inputs.shape.rank - 1)
  outputs = module(tf.pad(inputs, padding), **kwargs)

  def first_rows(t):
    t = t[:count]
    t.set_shape(tf.TensorShape([static]).concatenate(t.shape[1:]))
    return t

  return tf.nest.map_structure(first_rows, outputs)
