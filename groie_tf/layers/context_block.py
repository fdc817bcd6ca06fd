"""ContextBlock: the global context block of GCNet (Cao et al., 2019)."""

import math
from typing import Sequence

import tensorflow as tf
import tf_keras

from groie_tf.layers._empty_batch import pointwise
from groie_tf.layers.generalized_attention import softmax_dtype

__all__ = ['ContextBlock', 'POOLING_TYPES', 'FUSION_TYPES']

POOLING_TYPES = ('att', 'avg')
FUSION_TYPES = ('channel_add', 'channel_mul')


class _Transform(tf_keras.layers.Layer):
  """1x1 conv C->planes, LayerNorm over the planes, ReLU, 1x1 conv planes->C,
  on a `[N, 1, 1, C]` context; the last conv starts at zero."""

  def __init__(self, planes: int, channels: int, kernel_regularizer,
               **kwargs):
    super().__init__(**kwargs)
    # PyTorch's Conv2d default for the first conv, as mmcv leaves it:
    # kaiming_uniform(a=sqrt(5)) draws the kernel from U(+-1/sqrt(fan_in)),
    # and the bias from the same range.
    bound = 1.0 / math.sqrt(channels)
    self.conv1 = pointwise(
        planes, 'conv1', dtype=self.dtype_policy,
        kernel_initializer=tf_keras.initializers.VarianceScaling(
            1.0 / 3.0, 'fan_in', 'uniform'),
        bias_initializer=tf_keras.initializers.RandomUniform(-bound, bound),
        kernel_regularizer=kernel_regularizer)
    # torch's LayerNorm([planes, 1, 1]): epsilon 1e-5 (tf_keras: 1e-3).
    self.norm = tf_keras.layers.LayerNormalization(
        axis=-1, epsilon=1e-5, name='norm', dtype=self.dtype_policy)
    self.conv2 = pointwise(
        channels, 'conv2', dtype=self.dtype_policy,
        kernel_initializer='zeros', bias_initializer='zeros',
        kernel_regularizer=kernel_regularizer)

  def call(self, context):
    return self.conv2(tf.nn.relu(self.norm(self.conv1(context))))


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class ContextBlock(tf_keras.layers.Layer):
  """Global context block, as mmcv's `ContextBlock` computes it.

  From Y. Cao, J. Xu, S. Lin, F. Wei, H. Hu, "GCNet: Non-local Networks
  Meet Squeeze-Excitation Networks and Beyond", ICCVW 2019; the GC-Net rows
  of GRoIE's Table V put one after conv3+BN of every bottleneck of ResNet
  stages c3-c5 (`groie_tf.modeling.gc_resnet`).

  The block pools one context vector per image: with `'att'`, a 1x1 conv
  C->1 (with bias) gives a logit per position, softmaxed over all H*W
  positions, and the context is the weighted sum of the features; with
  `'avg'`, their mean. Each fusion has its own transform of the context
  (1x1 conv C->planes, LayerNorm over the planes with epsilon 1e-5, ReLU,
  1x1 conv planes->C), broadcast over the map:
  `'channel_mul'` gives `x * sigmoid(t_mul)`, then `'channel_add'` adds
  `t_add`. `planes = int(C * ratio)`.

  Initialisation is mmcv's: the mask conv He-normal over fan_in (std
  sqrt(2/C)), bias 0; the last conv of each transform zero, so a new block
  is the identity; the first conv PyTorch's default, U(+-1/sqrt(C)).

  Pooling and softmax run in float32 under 16-bit policies (a c3 map at
  1024 px has 16k positions).

  Example:

  >>> block = ContextBlock(ratio=1 / 4)
  >>> x = tf.random.normal([2, 5, 7, 16])
  >>> bool(tf.reduce_all(block(x) == x))  # identity at initialisation
  True

  Args:
    ratio: planes of the transforms per input channel, in (0, 1].
    pooling_type: `'att'` or `'avg'`.
    fusion_types: a non-empty subset of `('channel_add', 'channel_mul')`.
    kernel_regularizer: regulariser of every conv kernel.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[N, H, W, C]` feature maps.

  Returns:
    `[N, H, W, C]`, in the layer's compute dtype.
  """

  def __init__(self, ratio: float = 1 / 4, pooling_type: str = 'att',
               fusion_types: Sequence[str] = ('channel_add',),
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if not 0 < ratio <= 1:
      raise ValueError(f'ratio must be in (0, 1], got {ratio!r}.')
    if pooling_type not in POOLING_TYPES:
      raise ValueError(f'pooling_type must be one of {POOLING_TYPES}, got '
                       f'{pooling_type!r}.')
    fusion_types = tuple(fusion_types)
    if (not fusion_types or len(set(fusion_types)) != len(fusion_types) or
        not set(fusion_types) <= set(FUSION_TYPES)):
      raise ValueError(f'fusion_types must be a non-empty subset of '
                       f'{FUSION_TYPES} without repeats, got {fusion_types!r}.')
    self.ratio = ratio
    self.pooling_type = pooling_type
    self.fusion_types = fusion_types
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels is None:
      raise ValueError('ContextBlock needs a static channel count.')
    planes = int(channels * self.ratio)
    if planes < 1:
      raise ValueError(f'ratio {self.ratio} leaves no plane for {channels} '
                       'channels.')
    if self.pooling_type == 'att':
      # Its logits feed the softmax, so it runs in the softmax's dtype.
      self.conv_mask = pointwise(
          1, 'conv_mask',
          dtype=tf.as_dtype(softmax_dtype(self.compute_dtype)).name,
          kernel_initializer=tf_keras.initializers.VarianceScaling(
              2.0, 'fan_in', 'untruncated_normal'),
          bias_initializer='zeros',
          kernel_regularizer=self.kernel_regularizer)
    self.transforms = {
        fusion: _Transform(planes, channels, self.kernel_regularizer,
                           name=fusion, dtype=self.dtype_policy)
        for fusion in self.fusion_types}
    super().build(input_shape)

  def _context(self, inputs):
    """`[N, 1, 1, C]` context of `[N, H, W, C]` inputs, in float32 or wider."""
    dtype = softmax_dtype(self.compute_dtype)
    features = tf.cast(inputs, dtype)
    if self.pooling_type == 'avg':
      return tf.reduce_mean(features, axis=[1, 2], keepdims=True)
    shape = tf.shape(inputs)
    logits = self.conv_mask(features)  # [N, H, W, 1]
    weights = tf.nn.softmax(
        tf.reshape(logits, [shape[0], shape[1] * shape[2]]), axis=-1)
    weights = tf.reshape(weights, [shape[0], shape[1], shape[2]])
    context = tf.einsum('nhw,nhwc->nc', weights, features)
    return context[:, tf.newaxis, tf.newaxis, :]

  def call(self, inputs):
    context = tf.cast(self._context(inputs), self.compute_dtype)
    outputs = inputs
    if 'channel_mul' in self.transforms:
      outputs = outputs * tf.sigmoid(self.transforms['channel_mul'](context))
    if 'channel_add' in self.transforms:
      outputs = outputs + self.transforms['channel_add'](context)
    return outputs

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        'ratio': self.ratio,
        'pooling_type': self.pooling_type,
        'fusion_types': list(self.fusion_types),
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config
