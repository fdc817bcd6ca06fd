"""mmdetection's FPN (`mmdet/models/necks/fpn.py`, the R-CNN configs')."""

from typing import Mapping, Optional

import tensorflow as tf
import tf_keras


def _xavier_uniform():
  # mmdetection's FPN: init_cfg Xavier, uniform, on every conv; biases 0.
  return tf_keras.initializers.GlorotUniform()


def nearest_resize(features: tf.Tensor, size) -> tf.Tensor:
  """`[B, h, w, C]` -> `[B, H, W, C]`, PyTorch's `interpolate(mode='nearest')`:
  output pixel i reads input pixel `floor(i * h / H)`, which is TensorFlow's
  legacy nearest rule (no half-pixel centres)."""
  return tf.raw_ops.ResizeNearestNeighbor(
      images=features, size=size, align_corners=False,
      half_pixel_centers=False)


def subsample(features: tf.Tensor) -> tf.Tensor:
  """`[B, H, W, C]` -> `[B, ceil(H/2), ceil(W/2), C]`: every other pixel,
  PyTorch's `max_pool2d(x, 1, stride=2)` (mmdetection's P6 from P5)."""
  return features[:, ::2, ::2, :]


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class FPN(tf_keras.layers.Layer):
  """Feature pyramid as mmdetection's `FPN(add_extra_convs=False)` builds it.

  For each backbone level l in `[min_level, backbone_max_level]`: a 1x1
  lateral conv (`lateral_l`, with bias), then, from the coarsest level
  down, the coarser lateral upsampled (nearest, to this level's size) and
  added, then a 3x3 conv (`post_hoc_l`, with bias, zero padding 1). No
  normalisation, no activation. Levels above the backbone's are the level
  below subsampled by 2 (`P[:, ::2, ::2]`, PyTorch's `max_pool2d(x, 1,
  stride=2)`): P6 from P5. Variable names are Model Garden's FPN's.

  Model Garden's FPN differs: batch norm on every output, P6 by a 3x3
  stride-2 conv, and upsampling by exactly 2 (the same as here when sizes
  double, as on canvases that are multiples of 2**max_level).

  Example:

  >>> fpn = FPN(min_level=2, max_level=6, num_filters=8)
  >>> features = {str(l): tf.zeros([1, 64 // 2**l, 96 // 2**l, 4 * 2**l])
  ...             for l in range(2, 6)}
  >>> {l: tuple(p.shape) for l, p in fpn(features).items()}['6']
  (1, 1, 2, 8)

  Args:
    min_level: the finest level, the first backbone level used (2: C2).
    max_level: the coarsest output level (6: P6, from P5).
    num_filters: output channels of every level (256).
    kernel_regularizer: regulariser of the conv kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    features: mapping from level strings to backbone maps `[B, H_l, W_l,
      C_l]`; levels from `min_level` up to the highest present (at most
      `max_level`) are used.

  Returns:
    A dict from level strings `min_level..max_level` to `[B, H_l, W_l,
    num_filters]` maps.
  """

  def __init__(self, min_level: int = 2, max_level: int = 6,
               num_filters: int = 256,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    if not 1 <= min_level <= max_level:
      raise ValueError(f'need 1 <= min_level <= max_level, got {min_level}, '
                       f'{max_level}.')
    if num_filters < 1:
      raise ValueError(f'num_filters must be positive, got {num_filters}.')
    self._config = dict(min_level=min_level, max_level=max_level,
                        num_filters=num_filters,
                        kernel_regularizer=kernel_regularizer)
    # One per backbone level, finest first (lists: checkpoints need string
    # keys in dicts).
    self._laterals = []
    self._post_hoc = []

  def _conv(self, kernel_size: int, name: str) -> tf_keras.layers.Conv2D:
    return tf_keras.layers.Conv2D(
        self._config['num_filters'], kernel_size, padding='same',
        kernel_initializer=_xavier_uniform(),
        kernel_regularizer=self._config['kernel_regularizer'], name=name)

  def build(self, input_shape: Mapping[str, tf.TensorShape]):
    min_level = self._config['min_level']
    self._backbone_levels = [
        l for l in range(min_level, self._config['max_level'] + 1)
        if str(l) in input_shape]
    if not self._backbone_levels or self._backbone_levels[0] != min_level:
      raise ValueError(f'FPN needs backbone level {min_level}, got levels '
                       f'{sorted(input_shape)}.')
    for level in self._backbone_levels:
      self._laterals.append(self._conv(1, f'lateral_{level}'))
      self._post_hoc.append(self._conv(3, f'post_hoc_{level}'))
    super().build(input_shape)

  def call(self, features: Mapping[str, tf.Tensor]):
    levels = self._backbone_levels
    laterals = {l: conv(features[str(l)])
                for l, conv in zip(levels, self._laterals)}
    for level in reversed(levels[:-1]):
      finer = laterals[level]
      laterals[level] = finer + nearest_resize(laterals[level + 1],
                                               tf.shape(finer)[1:3])
    outputs = {str(l): conv(laterals[l])
               for l, conv in zip(levels, self._post_hoc)}
    for level in range(levels[-1] + 1, self._config['max_level'] + 1):
      outputs[str(level)] = subsample(outputs[str(level - 1)])
    return outputs

  def get_config(self):
    config = dict(super().get_config(), **self._config)
    config['kernel_regularizer'] = tf_keras.regularizers.serialize(
        self._config['kernel_regularizer'])
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config['kernel_regularizer'] = tf_keras.regularizers.deserialize(
        config['kernel_regularizer'])
    return cls(**config)
