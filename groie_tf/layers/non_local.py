"""NonLocal2D: the embedded-Gaussian non-local block of Wang et al. (2018)."""

import math

import tensorflow as tf
import tf_keras

from groie_tf.layers._empty_batch import pointwise
from groie_tf.layers.generalized_attention import softmax_dtype

__all__ = ['NonLocal2D']


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class NonLocal2D(tf_keras.layers.Layer):
  """Embedded-Gaussian non-local block.

  From X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks",
  CVPR 2018, as mmcv's `NonLocal2d(mode='embedded_gaussian')` computes it
  (GRoIE ablations v8 and v13). Three 1x1 convolutions with bias, `theta`,
  `phi` and `g`, project C channels to `C' = C // reduction`; every pixel
  attends to every pixel with weights
  `softmax_j(theta_i . phi_j / sqrt(C'))`; a 1x1 `conv_out` maps the
  attended `g` features back to C channels and the block returns
  `x + conv_out(y)`. `conv_out` starts at zero, so the block starts as the
  identity; the projections start from normal(0, 0.01), as in mmcv.

  Example:

  >>> block = NonLocal2D(reduction=2)
  >>> block(tf.zeros([3, 7, 7, 256])).shape
  TensorShape([3, 7, 7, 256])

  Args:
    reduction: channel reduction of the projections, >= 1.
    use_scale: divide the logits by sqrt(C').
    kernel_regularizer: regulariser of the four kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[N, H, W, C]` feature maps.

  Returns:
    `[N, H, W, C]`, in the layer's compute dtype.
  """

  def __init__(self, reduction: int = 2, use_scale: bool = True,
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(reduction, int) or reduction < 1:
      raise ValueError(f'reduction must be an int >= 1, got {reduction!r}.')
    self.reduction = reduction
    self.use_scale = use_scale
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  def _conv(self, filters, name, initializer):
    return pointwise(filters, name, dtype=self.dtype_policy,
                     kernel_initializer=initializer, bias_initializer='zeros',
                     kernel_regularizer=self.kernel_regularizer)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels is None:
      raise ValueError('NonLocal2D needs a static channel count.')
    self._inner = max(channels // self.reduction, 1)
    normal = lambda: tf_keras.initializers.RandomNormal(stddev=0.01)
    self.theta = self._conv(self._inner, 'theta', normal())
    self.phi = self._conv(self._inner, 'phi', normal())
    self.g = self._conv(self._inner, 'g', normal())
    self.conv_out = self._conv(channels, 'conv_out', 'zeros')
    super().build(input_shape)

  def call(self, inputs):
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]

    def pixels(t):  # [N, H, W, C'] -> [N, HW, C']
      return tf.reshape(t, [batch, height * width, self._inner])

    theta, phi, g = (pixels(self.theta(inputs)), pixels(self.phi(inputs)),
                     pixels(self.g(inputs)))
    logits = tf.matmul(theta, phi, transpose_b=True)  # [N, HW, HW]
    if self.use_scale:
      logits /= math.sqrt(self._inner)
    weights = tf.cast(
        tf.nn.softmax(tf.cast(logits, softmax_dtype(self.compute_dtype)), -1),
        self.compute_dtype)
    attended = tf.matmul(weights, g)  # [N, HW, C']
    attended = tf.reshape(attended, [batch, height, width, self._inner])
    return inputs + self.conv_out(attended)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        'reduction': self.reduction,
        'use_scale': self.use_scale,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config
