"""GridHead: Grid R-CNN Plus's grid-point head, as mmdetection builds it."""

import math
from typing import Dict, List, Tuple

import tensorflow as tf
import tf_keras

from groie_tf.layers._empty_batch import call_on_batch

__all__ = ['GridHead', 'neighbour_points']

GRID_SIZE = 3
GRID_POINTS = GRID_SIZE * GRID_SIZE


def neighbour_points() -> List[Tuple[int, ...]]:
  """Each point's 4-neighbours in the 3x3 grid, in mmdetection's order
  (left, up, down, right; point j is column `j // 3`, row `j % 3`): 24
  directed edges in all."""
  out = []
  for column in range(GRID_SIZE):
    for row in range(GRID_SIZE):
      neighbours = []
      if column > 0:
        neighbours.append((column - 1) * GRID_SIZE + row)
      if row > 0:
        neighbours.append(column * GRID_SIZE + row - 1)
      if row < GRID_SIZE - 1:
        neighbours.append(column * GRID_SIZE + row + 1)
      if column < GRID_SIZE - 1:
        neighbours.append((column + 1) * GRID_SIZE + row)
      out.append(tuple(neighbours))
  return out


def _kaiming_fan_out():
  # torch's kaiming_normal_(mode='fan_out', nonlinearity='relu'), which
  # mmdetection applies to every Conv2d of the head.
  return tf_keras.initializers.VarianceScaling(2.0, 'fan_out',
                                               'untruncated_normal')


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class GridHead(tf_keras.layers.Layer):
  """Grid R-CNN Plus's head: nine grid-point heatmaps per RoI.

  From X. Lu, B. Li, Y. Yue, Q. Li, J. Yan, "Grid R-CNN Plus: Faster and
  Better", arXiv 1906.05688 (2019), as mmdetection's `GridHead` computes it
  (the Grid R-CNN rows of GRoIE's Table V):

  1. `num_convs` 3x3 convs with bias, each + GroupNorm(`norm_groups`,
     epsilon 1e-5) + ReLU; the first has stride 2 with torch's padding of 1
     on each side (14x14 -> 7x7). `9 * point_channels` channels, point j
     owning channels `[j * point_channels, (j + 1) * point_channels)`.
  2. Feature fusion over the grid's 24 directed edges, each edge with its
     own 5x5 depth-wise conv + 1x1 conv (both with bias): first order
     `fo_i = x_i + sum_{j in N(i)} T_fo_ij(x_j)`, second order
     `so_i = x_i + sum_{j in N(i)} T_so_ij(fo_j)`.
  3. Two 4x4 stride-2 transposed convs, grouped by point (7 -> 14 -> 28),
     GroupNorm(9) + ReLU between them: the fused heatmaps from `so`, and in
     training the unfused ones from `x`, with the same weights.

  Initialisation is mmdetection's: He-normal over fan_out for the convs,
  normal(0.001) for the transposed convs, the last one's bias
  -log(0.99 / 0.01) (a 1% prior).

  Example:

  >>> head = GridHead(num_convs=2, point_channels=8, norm_groups=9)
  >>> out = head(tf.zeros([3, 14, 14, 16]), training=True)
  >>> out['fused'].shape, out['unfused'].shape
  (TensorShape([3, 28, 28, 9]), TensorShape([3, 28, 28, 9]))

  Args:
    num_convs: 3x3 convs before the fusion (8 in mmdetection).
    point_channels: channels per grid point (64).
    norm_groups: GroupNorm groups of the convs (36); must divide
      `9 * point_channels`.
    kernel_regularizer: regulariser of every kernel.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[R, 14, 14, C]` RoI features, R >= 0.
    training: also return the unfused heatmaps (else they are the fused).

  Returns:
    `{'fused': [R, 28, 28, 9], 'unfused': [R, 28, 28, 9]}` logits.
  """

  def __init__(self, num_convs: int = 8, point_channels: int = 64,
               norm_groups: int = 36, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(num_convs, int) or num_convs < 1:
      raise ValueError(f'num_convs must be an int >= 1, got {num_convs!r}.')
    if not isinstance(point_channels, int) or point_channels < 1:
      raise ValueError('point_channels must be an int >= 1, got '
                       f'{point_channels!r}.')
    if (GRID_POINTS * point_channels) % norm_groups:
      raise ValueError(f'norm_groups ({norm_groups}) must divide the '
                       f'{GRID_POINTS * point_channels} channels '
                       f'(9 x point_channels).')
    self.num_convs = num_convs
    self.point_channels = point_channels
    self.norm_groups = norm_groups
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  def _norm(self, groups, name):
    return tf_keras.layers.GroupNormalization(
        groups=groups, epsilon=1e-5, name=name, dtype=self.dtype_policy)

  def _transition(self, name):
    """One edge: 5x5 depth-wise conv, then 1x1 conv."""
    # torch's fan_out of a [C, 1, 5, 5] depth-wise weight is 25 C, which is
    # Keras's fan_in of the [5, 5, C, 1] kernel.
    return [
        tf_keras.layers.DepthwiseConv2D(
            5, padding='same', name=f'{name}_depthwise',
            dtype=self.dtype_policy,
            depthwise_initializer=tf_keras.initializers.VarianceScaling(
                2.0, 'fan_in', 'untruncated_normal'),
            depthwise_regularizer=self.kernel_regularizer),
        tf_keras.layers.Conv2D(
            self.point_channels, 1, name=f'{name}_pointwise',
            dtype=self.dtype_policy, kernel_initializer=_kaiming_fan_out(),
            kernel_regularizer=self.kernel_regularizer)]

  def _deconvs(self, filters, name, bias):
    """One 4x4 stride-2 transposed conv per point (Keras has no groups);
    'same' padding is torch's padding of 1."""
    return [tf_keras.layers.Conv2DTranspose(
        filters, 4, strides=2, padding='same', name=f'{name}_{point}',
        dtype=self.dtype_policy,
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer=tf_keras.initializers.Constant(bias),
        kernel_regularizer=self.kernel_regularizer)
            for point in range(GRID_POINTS)]

  def build(self, input_shape):
    if input_shape[-1] is None:
      raise ValueError('GridHead needs a static channel count.')
    if tuple(input_shape[1:3]) != (14, 14):
      raise ValueError('GridHead takes 14x14 RoI features, got '
                       f'{tuple(input_shape[1:3])}.')
    channels = GRID_POINTS * self.point_channels
    self.convs = []
    for i in range(self.num_convs):
      self.convs.append((
          tf_keras.layers.Conv2D(
              channels, 3, strides=2 if i == 0 else 1,
              # The first conv pads explicitly: Keras's 'same' at stride 2
              # pads (0, 1), torch (1, 1), a one-pixel shift of the grid.
              padding='valid' if i == 0 else 'same', name=f'conv{i}',
              dtype=self.dtype_policy, kernel_initializer=_kaiming_fan_out(),
              kernel_regularizer=self.kernel_regularizer),
          self._norm(self.norm_groups, f'conv{i}_norm')))
    self.neighbours = neighbour_points()
    self.first_order = [[self._transition(f'first_order_{i}_from_{j}')
                         for j in points]
                        for i, points in enumerate(self.neighbours)]
    self.second_order = [[self._transition(f'second_order_{i}_from_{j}')
                          for j in points]
                         for i, points in enumerate(self.neighbours)]
    self.deconv1 = self._deconvs(self.point_channels, 'deconv1', 0.0)
    self.deconv1_norm = self._norm(GRID_POINTS, 'deconv1_norm')
    self.deconv2 = self._deconvs(1, 'deconv2', -math.log(0.99 / 0.01))
    super().build(input_shape)

  def _points(self, x) -> List[tf.Tensor]:
    c = self.point_channels
    return [x[..., j * c:(j + 1) * c] for j in range(GRID_POINTS)]

  def _fuse(self, x):
    points = self._points(x)

    def apply(transition, features):
      depthwise, pointwise = transition
      return pointwise(depthwise(features))

    first = [points[i] + tf.add_n([apply(t, points[j]) for t, j in
                                   zip(self.first_order[i], neighbours)])
             for i, neighbours in enumerate(self.neighbours)]
    return [points[i] + tf.add_n([apply(t, first[j]) for t, j in
                                  zip(self.second_order[i], neighbours)])
            for i, neighbours in enumerate(self.neighbours)]

  def _heatmaps(self, points: List[tf.Tensor]) -> tf.Tensor:
    x = tf.concat([d(p) for d, p in zip(self.deconv1, points)], -1)
    x = tf.nn.relu(self.deconv1_norm(x))
    return tf.concat([d(p) for d, p in zip(self.deconv2, self._points(x))],
                     -1)

  def call(self, inputs, training=None) -> Dict[str, tf.Tensor]:
    # Its convs need a non-empty batch (`_empty_batch`).
    return call_on_batch(self._heads, inputs, training=training)

  def _heads(self, inputs, training):
    x = inputs
    for i, (conv, norm) in enumerate(self.convs):
      if i == 0:
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
      x = tf.nn.relu(norm(conv(x)))
    fused = self._heatmaps(self._fuse(x))
    unfused = self._heatmaps(self._points(x)) if training else fused
    return {'fused': fused, 'unfused': unfused}

  def get_config(self):
    config = super().get_config()
    config.update({
        'num_convs': self.num_convs,
        'point_channels': self.point_channels,
        'norm_groups': self.norm_groups,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config
