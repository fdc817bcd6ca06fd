"""Model Garden's ResNet, optionally padded as PyTorch pads.

Keras `'same'` padding of a stride-2 layer on an even input puts nothing
before the first row and one row after the last; PyTorch (mmdetection's
ResNet, torchvision's) pads `kernel // 2` on both sides. The sampling grid
of every later layer then sits one input pixel apart: with mmdetection's
weights, Model Garden's ResNet-50 gives C2-C5 23-58% off
(`docs/fidelity.md`). Canvases are multiples of 32, so every stride-2 layer
of a ResNet sees an even size.

`ResNet(pytorch_padding=True)` pads explicitly where PyTorch does (the
stem's 7x7 conv by 3, its max pool by 1, the strided 3x3 conv of each
stage's first block by 1) and convolves 'valid' there; every other layer,
and every variable, is Model Garden's, so a checkpoint of either padding
loads into the other. The max pool's input follows a ReLU (>= 0), so zero
padding is what PyTorch's -inf padding gives.
"""

import functools
from typing import Any, Dict

import tensorflow as tf
import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.backbones import resnet
from official.vision.modeling.layers import nn_blocks


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class SymmetricPaddingConv2D(tf_keras.layers.Conv2D):
  """A Conv2D padded as PyTorch pads: `kernel // 2` zeros on each side of
  each spatial axis, then a 'valid' convolution (channels last).

  For an odd kernel at stride 1 that is Keras 'same'; at stride 2 on an
  even input it is one more zero before and one fewer after.
  """

  def __init__(self, *args, **kwargs):
    kwargs['padding'] = 'valid'
    super().__init__(*args, **kwargs)

  def call(self, inputs):
    pad_h, pad_w = self.kernel_size[0] // 2, self.kernel_size[1] // 2
    return super().call(
        tf.pad(inputs, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]]))


# Where the stride sits: Model Garden's (and mmdetection's 'pytorch'
# style) bottleneck strides its 3x3 conv2, the basic block its conv1.
_STRIDED_CONV = {nn_blocks.BottleneckBlock: '_conv2',
                 nn_blocks.ResidualBlock: '_conv1'}


@functools.lru_cache(maxsize=None)
def pytorch_padded(block_class):
  """`block_class` (a subclass of Model Garden's bottleneck or basic block)
  whose strided 3x3 conv pads as PyTorch pads.

  The conv Model Garden's `build` made is replaced by one with the same
  config before any weight exists, so variables, their names and their
  order are unchanged. One class per `block_class`, registered for
  deserialisation (the modules that define block classes make theirs at
  import).
  """
  strided_conv = next(attribute for base, attribute in _STRIDED_CONV.items()
                      if issubclass(block_class, base))

  class WithPyTorchPadding(block_class):

    def build(self, input_shape):
      super().build(input_shape)
      conv = getattr(self, strided_conv)
      if conv.strides == (1, 1):
        return
      padded = SymmetricPaddingConv2D.from_config(conv.get_config())
      # Keras lists a reassigned sublayer last; put it back in the old one's
      # place, so that `weights` (and `get_weights`) keep Model Garden's
      # order.
      index = self._self_tracked_trackables.index(conv)
      setattr(self, strided_conv, padded)
      tracked = self._self_tracked_trackables  # a new list
      tracked.remove(padded)
      tracked.insert(index, padded)

  WithPyTorchPadding.__name__ = f'PyTorchPadded{block_class.__name__}'
  WithPyTorchPadding.__qualname__ = WithPyTorchPadding.__name__
  return tf_keras.utils.register_keras_serializable(package='groie_tf')(
      WithPyTorchPadding)


for _block in _STRIDED_CONV:
  pytorch_padded(_block)


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class ResNet(resnet.ResNet):
  """Model Garden's ResNet; with `pytorch_padding`, padded as PyTorch pads.

  Example:

  >>> inputs = tf.zeros([1, 64, 96, 3])
  >>> keras = ResNet(model_id=18, depth_multiplier=0.25, scale_stem=True,
  ...     input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 96, 3]))
  >>> torch = ResNet(model_id=18, depth_multiplier=0.25, scale_stem=True,
  ...     pytorch_padding=True,
  ...     input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 96, 3]))
  >>> [v.shape for v in keras.variables] == [v.shape for v in torch.variables]
  True
  >>> torch(inputs)['5'].shape
  TensorShape([1, 2, 3, 128])

  Args:
    model_id: ResNet depth, as Model Garden's.
    pytorch_padding: pad the stride-2 layers as PyTorch pads (module doc);
      needs the 'v0' stem with its max pool (mmdetection's).
    **kwargs: Model Garden's `ResNet` arguments.
  """

  def __init__(self, model_id: int, pytorch_padding: bool = False, **kwargs):
    # Model Garden's ResNet builds its graph inside __init__, calling
    # `_stem` and `_block_group`, which read this.
    self._pytorch_padding = pytorch_padding
    if pytorch_padding and (kwargs.get('stem_type', 'v0') != 'v0' or
                            kwargs.get('replace_stem_max_pool', False) or
                            kwargs.get('resnetd_shortcut', False)):
      raise ValueError(
          "pytorch_padding needs the 'v0' stem with its max pool and plain "
          "shortcuts (mmdetection's ResNet), got stem_type="
          f"{kwargs.get('stem_type')!r}, replace_stem_max_pool="
          f"{kwargs.get('replace_stem_max_pool')!r}, resnetd_shortcut="
          f"{kwargs.get('resnetd_shortcut')!r}.")
    super().__init__(model_id=model_id, **kwargs)

  def _stem(self, inputs):
    if not self._pytorch_padding:
      return super()._stem(inputs)
    stem_depth_multiplier = self._depth_multiplier if self._scale_stem else 1.0
    x = SymmetricPaddingConv2D(
        filters=int(64 * stem_depth_multiplier),
        kernel_size=7,
        strides=2,
        use_bias=False,
        kernel_initializer=self._kernel_initializer,
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer)(inputs)
    x = self._norm(
        axis=self._bn_axis,
        momentum=self._norm_momentum,
        epsilon=self._norm_epsilon,
        trainable=self._bn_trainable,
        synchronized=self._use_sync_bn)(x)
    x = tf_utils.get_activation(self._activation, use_keras_layer=True)(x)
    x = tf_keras.layers.ZeroPadding2D(1)(x)
    return tf_keras.layers.MaxPool2D(pool_size=3, strides=2,
                                     padding='valid')(x)

  def _block_group(self, inputs, filters, strides, block_fn, block_repeats=1,
                   stochastic_depth_drop_rate=0.0, name='block_group'):
    level = int(name.rsplit('_l', 1)[1])  # 'block_group_l3' -> 3
    block_class = self._block_class(block_fn, level)
    if self._pytorch_padding:
      block_class = pytorch_padded(block_class)
    block_fn = functools.partial(block_class, **self._block_kwargs(level))
    return super()._block_group(inputs, filters, strides, block_fn,
                                block_repeats, stochastic_depth_drop_rate,
                                name)

  def _block_class(self, block_fn, level: int):
    """The block class of stage `level` (2..5) for Model Garden's
    `block_fn`; a subclass's (the padding is added to it)."""
    del level  # the same class in every stage
    return block_fn

  def _block_kwargs(self, level: int) -> Dict[str, Any]:
    """Arguments of the blocks of stage `level`, besides Model Garden's."""
    del level
    return {}

  def get_config(self):
    config = super().get_config()
    config['pytorch_padding'] = self._pytorch_padding
    return config


def build_resnet(input_specs: tf_keras.layers.InputSpec, backbone_config,
                 norm_activation_config, l2_regularizer=None,
                 pytorch_padding: bool = False) -> ResNet:
  """A `ResNet` from a `backbone` config of type `resnet`, as Model
  Garden's `build_resnet` builds its own, padded as `pytorch_padding`
  says."""
  return ResNet(pytorch_padding=pytorch_padding,
                **resnet_arguments(input_specs, backbone_config.get(),
                                   norm_activation_config, l2_regularizer))


def resnet_arguments(input_specs: tf_keras.layers.InputSpec, backbone_config,
                     norm_activation_config, l2_regularizer):
  """The arguments Model Garden's `build_resnet` gives its ResNet, from a
  `resnet` (or `gc_resnet`) config block."""
  return dict(
      model_id=backbone_config.model_id,
      input_specs=input_specs,
      depth_multiplier=backbone_config.depth_multiplier,
      stem_type=backbone_config.stem_type,
      resnetd_shortcut=backbone_config.resnetd_shortcut,
      replace_stem_max_pool=backbone_config.replace_stem_max_pool,
      se_ratio=backbone_config.se_ratio,
      init_stochastic_depth_rate=backbone_config.stochastic_depth_drop_rate,
      scale_stem=backbone_config.scale_stem,
      activation=norm_activation_config.activation,
      use_sync_bn=norm_activation_config.use_sync_bn,
      norm_momentum=norm_activation_config.norm_momentum,
      norm_epsilon=norm_activation_config.norm_epsilon,
      kernel_regularizer=l2_regularizer,
      bn_trainable=backbone_config.bn_trainable)
