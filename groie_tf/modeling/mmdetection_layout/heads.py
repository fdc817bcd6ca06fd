"""mmdetection's R-CNN heads, without normalisation, in Model Garden's call
convention and output layout.

Model Garden's `RPNHead`, `DetectionHead` and `MaskHead` batch-normalise
after every conv and FC (no switch turns it off); mmdetection's
`RPNHead`, `Shared2FCBBoxHead` and `FCNMaskHead` do not. These layers are
mmdetection's, with Model Garden's inputs and outputs, so Model Garden's
`MaskRCNNModel`, losses and detection generator take them as they are:

- RPN outputs per level `[B, H, W, A]` logits and `[B, H, W, 4A]` deltas,
  anchor-major, deltas ordered (dy, dx, dh, dw) (mmdetection's are
  (dx, dy, dw, dh): a converted checkpoint permutes its rows);
- box head outputs `[B, N, num_classes]` logits with the background at 0
  (mmdetection's last) and `[B, N, 4 * num_classes]` deltas, the RoI
  features flattened (H, W, C) (mmdetection's (C, H, W));
- the mask head gathers each RoI's class from `[B, N, 2S, 2S,
  num_classes]` logits.

Initialisers are mmdetection's, so that training starts where it starts.
"""

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

Regularizer = Optional[tf_keras.regularizers.Regularizer]


def _normal(stddev: float):
  return tf_keras.initializers.RandomNormal(stddev=stddev)


def _kaiming_fan_out():
  # mmcv's kaiming_init(mode='fan_out', nonlinearity='relu').
  return tf_keras.initializers.VarianceScaling(2.0, 'fan_out',
                                               'untruncated_normal')


class _Head(tf_keras.layers.Layer):
  """Keeps the constructor arguments for `get_config`."""

  def __init__(self, config, **kwargs):
    super().__init__(**kwargs)
    self._config = config

  def get_config(self):
    config = dict(super().get_config(), **self._config)
    config['kernel_regularizer'] = tf_keras.regularizers.serialize(
        self._config['kernel_regularizer'])
    return config


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class RPNHead(_Head):
  """mmdetection's `RPNHead`: a shared 3x3 conv + ReLU, then 1x1 convs to
  A objectness logits and 4A deltas, on every level.

  Args:
    min_level, max_level: the levels it runs on.
    num_anchors_per_location: A.
    num_filters: channels of the 3x3 conv (256).
    kernel_regularizer: regulariser of the kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    features: mapping from level strings to `[B, H_l, W_l, C]` maps.

  Returns:
    `(scores, boxes)`: dicts from level strings to `[B, H_l, W_l, A]`
    logits and `[B, H_l, W_l, 4A]` deltas (dy, dx, dh, dw per anchor).
  """

  def __init__(self, min_level: int = 2, max_level: int = 6,
               num_anchors_per_location: int = 3, num_filters: int = 256,
               kernel_regularizer: Regularizer = None, **kwargs):
    super().__init__(dict(min_level=min_level, max_level=max_level,
                          num_anchors_per_location=num_anchors_per_location,
                          num_filters=num_filters,
                          kernel_regularizer=kernel_regularizer), **kwargs)
    # mmdetection's RPNHead: init_cfg Normal(std=0.01) on its convs.
    conv = lambda filters, size, name: tf_keras.layers.Conv2D(
        filters, size, padding='same', kernel_initializer=_normal(0.01),
        kernel_regularizer=kernel_regularizer, name=name)
    self._conv = conv(num_filters, 3, 'rpn-conv_0')
    self._scores = conv(num_anchors_per_location, 1, 'rpn-scores')
    self._boxes = conv(4 * num_anchors_per_location, 1, 'rpn-boxes')

  def call(self, features):
    scores, boxes = {}, {}
    for level in range(self._config['min_level'],
                       self._config['max_level'] + 1):
      x = tf.nn.relu(self._conv(features[str(level)]))
      scores[str(level)] = self._scores(x)
      boxes[str(level)] = self._boxes(x)
    return scores, boxes


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class Shared2FCBBoxHead(_Head):
  """mmdetection's `Shared2FCBBoxHead`: the RoI features flattened, FCs +
  ReLU, then a class FC and a class-specific box FC.

  Args:
    num_classes: classes including the background (column 0).
    fc_dims: width of the shared FCs (1024).
    num_fcs: shared FCs (2).
    with_reg: False for mmdetection's `with_reg=False` (Grid R-CNN's box
      head, which only classifies): no box FC and no variables of one; the
      deltas returned are zeros, so that Model Garden's detection step
      keeps the RoIs and its box loss is 0.
    kernel_regularizer: regulariser of the kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[B, N, S, S, C]` RoI features.

  Returns:
    `(classes, boxes)`: `[B, N, num_classes]` logits and `[B, N, 4 *
    num_classes]` deltas (dy, dx, dh, dw per class, scaled by Model
    Garden's box weights (10, 10, 5, 5), which are mmdetection's
    target_stds (0.1, 0.1, 0.2, 0.2)).
  """

  def __init__(self, num_classes: int, fc_dims: int = 1024, num_fcs: int = 2,
               with_reg: bool = True, kernel_regularizer: Regularizer = None,
               **kwargs):
    super().__init__(dict(num_classes=num_classes, fc_dims=fc_dims,
                          num_fcs=num_fcs, with_reg=with_reg,
                          kernel_regularizer=kernel_regularizer), **kwargs)
    dense = lambda units, initializer, name: tf_keras.layers.Dense(
        units, kernel_initializer=initializer,
        kernel_regularizer=kernel_regularizer, name=name)
    # mmdetection: Xavier uniform on the shared FCs, Normal(0.01) on the
    # classifier and Normal(0.001) on the regressor; biases 0.
    self._fcs = [dense(fc_dims, tf_keras.initializers.GlorotUniform(),
                       f'detection-fc_{i}') for i in range(num_fcs)]
    self._classifier = dense(num_classes, _normal(0.01), 'detection-scores')
    self._box_regressor = (dense(4 * num_classes, _normal(0.001),
                                 'detection-boxes') if with_reg else None)

  def call(self, inputs, training=None):
    del training  # no dropout, no normalisation
    _, num_rois, height, width, channels = inputs.shape.as_list()
    x = tf.reshape(inputs, [-1, num_rois, height * width * channels])
    for fc in self._fcs:
      x = tf.nn.relu(fc(x))
    if self._box_regressor is None:
      # Broadcast, not tf.zeros(shape): keeps the static [B, N, 4 classes].
      return self._classifier(x), tf.zeros_like(x[..., :1]) + tf.zeros(
          [4 * self._config['num_classes']], x.dtype)
    return self._classifier(x), self._box_regressor(x)


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class FCNMaskHead(_Head):
  """mmdetection's `FCNMaskHead`: 3x3 convs + ReLU, a 2x2 stride-2
  transposed conv + ReLU, then 1x1 logits per class, gathered at each
  RoI's class.

  Args:
    num_classes: classes including the background (column 0).
    num_convs: 3x3 convs (4).
    num_filters: their channels and the transposed conv's (256).
    kernel_regularizer: regulariser of the kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[roi_features, roi_classes]`: `[B, N, S, S, C]` and `[B, N]`.

  Returns:
    `[B, N, 2S, 2S]` mask logits of each RoI's class.
  """

  def __init__(self, num_classes: int, num_convs: int = 4,
               num_filters: int = 256, kernel_regularizer: Regularizer = None,
               **kwargs):
    super().__init__(dict(num_classes=num_classes, num_convs=num_convs,
                          num_filters=num_filters,
                          kernel_regularizer=kernel_regularizer), **kwargs)
    # mmdetection: kaiming fan_out (ReLU) on every conv; biases 0.
    self._convs = [
        tf_keras.layers.Conv2D(num_filters, 3, padding='same',
                               kernel_initializer=_kaiming_fan_out(),
                               kernel_regularizer=kernel_regularizer,
                               name=f'mask-conv_{i}')
        for i in range(num_convs)]
    self._deconv = tf_keras.layers.Conv2DTranspose(
        num_filters, 2, strides=2, padding='valid',
        kernel_initializer=_kaiming_fan_out(),
        kernel_regularizer=kernel_regularizer, name='mask-upsampling')
    self._mask_regressor = tf_keras.layers.Conv2D(
        num_classes, 1, kernel_initializer=_kaiming_fan_out(),
        kernel_regularizer=kernel_regularizer, name='mask-logits')

  def call(self, inputs: Sequence[tf.Tensor], training=None):
    del training
    roi_features, roi_classes = inputs
    _, num_rois, height, width, channels = roi_features.shape.as_list()
    x = tf.reshape(roi_features, [-1, height, width, channels])
    for conv in self._convs:
      x = tf.nn.relu(conv(x))
    x = tf.nn.relu(self._deconv(x))
    logits = tf.reshape(self._mask_regressor(x),
                        [-1, num_rois, 2 * height, 2 * width,
                         self._config['num_classes']])
    return tf.gather(logits, tf.cast(roi_classes, tf.int32), axis=-1,
                     batch_dims=2)
