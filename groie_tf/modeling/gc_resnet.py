"""GCNet's ResNet: Model Garden's ResNet with a global context block in
every residual block of the chosen stages, registered as `gc_resnet`.

mmdetection's GC-Net configs (`r4_gcb_c3-c5`) put mmcv's `ContextBlock`
after conv3 and its batch norm, before the residual add, in every
bottleneck of stages c3-c5, the strided first block included. Model
Garden's blocks have a slot at that very place: the squeeze-excitation
layer, applied after the last norm and before stochastic depth and the
add. The blocks below put the context block there, so Model Garden's own
`call` runs it and nothing of the block is rewritten. Its weights are
therefore saved under `_squeeze_excitation` in checkpoints.

ResNet-18 and -34 have basic blocks (two 3x3 convs, no conv3): there the
context block follows the second conv and its norm, the same place
relative to the add. The built-in data set's GC experiments use that.
"""

from typing import Optional, Sequence

import tf_keras
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory
from official.vision.modeling.layers import nn_blocks

from groie_tf.configs.backbones import check_gc_levels
from groie_tf.layers import context_block
from groie_tf.modeling import resnet

def _with_context_block(block_class):
  """`block_class` with a `ContextBlock` in its squeeze-excitation slot."""

  class WithContextBlock(block_class):
    """Model Garden's block with GCNet's context block before the add."""

    def __init__(self, gc_ratio: float = 1 / 4, gc_pooling: str = 'att',
                 gc_fusion: Sequence[str] = ('channel_add',), **kwargs):
      super().__init__(**kwargs)
      if self._se_ratio:
        raise ValueError('A block takes a context block or squeeze-excitation,'
                         f' not both; got se_ratio={self._se_ratio}.')
      self._gc_ratio = gc_ratio
      self._gc_pooling = gc_pooling
      self._gc_fusion = tuple(gc_fusion)
      # Built here, so that bad options fail when the backbone is built.
      self._context_block = context_block.ContextBlock(
          ratio=gc_ratio, pooling_type=gc_pooling, fusion_types=gc_fusion,
          kernel_regularizer=self._kernel_regularizer, name='context_block',
          dtype=self.dtype_policy)

    def build(self, input_shape):
      super().build(input_shape)
      # The slot Model Garden's `call` applies after the last norm.
      self._squeeze_excitation = self._context_block

    @property
    def context_block(self) -> context_block.ContextBlock:
      return self._context_block

    def get_config(self):
      config = super().get_config()
      config.update(gc_ratio=self._gc_ratio, gc_pooling=self._gc_pooling,
                    gc_fusion=list(self._gc_fusion))
      return config

  WithContextBlock.__name__ = f'GC{block_class.__name__}'
  WithContextBlock.__qualname__ = WithContextBlock.__name__
  return tf_keras.utils.register_keras_serializable(package='groie_tf')(
      WithContextBlock)


GCBottleneckBlock = _with_context_block(nn_blocks.BottleneckBlock)
GCResidualBlock = _with_context_block(nn_blocks.ResidualBlock)
_GC_BLOCKS = {nn_blocks.BottleneckBlock: GCBottleneckBlock,
              nn_blocks.ResidualBlock: GCResidualBlock}
for _block in _GC_BLOCKS.values():
  resnet.pytorch_padded(_block)  # registered for deserialisation


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class GCResNet(resnet.ResNet):
  """Model Garden's ResNet (`groie_tf.modeling.resnet`, so optionally
  padded as PyTorch pads) with GCNet context blocks (GCNet, Cao et al.,
  ICCVW 2019; the GC-Net rows of GRoIE's Table V).

  Every block of the stages in `gc_levels` gets a
  `groie_tf.layers.ContextBlock` after its last conv and norm, before the
  residual add. New blocks are the identity (their last convs start at
  zero), so a fresh GCResNet computes what the plain ResNet with the same
  weights computes, and an ImageNet ResNet checkpoint is a sound start
  (`groie_tf.modeling.gc_checkpoint`).

  Example:

  >>> backbone = GCResNet(model_id=50, gc_levels=(3, 4, 5), gc_ratio=1 / 4)
  >>> sum(isinstance(l, GCBottleneckBlock) for l in backbone.layers)
  13

  Args:
    model_id: ResNet depth (18, 34, 50, 101, 152, ...), as Model Garden's.
    gc_levels: the stages (levels 2..5, c2..c5) whose blocks get one.
    gc_ratio: `ContextBlock.ratio`.
    gc_pooling: `ContextBlock.pooling_type`.
    gc_fusion: `ContextBlock.fusion_types`.
    **kwargs: `groie_tf.modeling.resnet.ResNet`'s arguments (Model
      Garden's, and `pytorch_padding`); `se_ratio` must stay unset in the GC
      stages.
  """

  def __init__(self, model_id: int, gc_levels: Sequence[int] = (3, 4, 5),
               gc_ratio: float = 1 / 4, gc_pooling: str = 'att',
               gc_fusion: Sequence[str] = ('channel_add',), **kwargs):
    gc_levels = check_gc_levels(gc_levels)
    # Model Garden's ResNet builds its graph inside __init__, calling
    # `_block_group`, which reads these.
    self._gc_levels = gc_levels
    self._gc_block_args = dict(gc_ratio=gc_ratio, gc_pooling=gc_pooling,
                               gc_fusion=tuple(gc_fusion))
    super().__init__(model_id=model_id, **kwargs)

  def _block_class(self, block_fn, level: int):
    return _GC_BLOCKS[block_fn] if level in self._gc_levels else block_fn

  def _block_kwargs(self, level: int):
    return dict(self._gc_block_args) if level in self._gc_levels else {}

  def get_config(self):
    config = super().get_config()
    config.update(gc_levels=list(self._gc_levels),
                  gc_ratio=self._gc_block_args['gc_ratio'],
                  gc_pooling=self._gc_block_args['gc_pooling'],
                  gc_fusion=list(self._gc_block_args['gc_fusion']))
    return config


@factory.register_backbone_builder('gc_resnet')
def build_gc_resnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None,
    pytorch_padding: bool = False) -> tf_keras.Model:
  """Builds a `GCResNet` from `backbone.gc_resnet`, with the arguments Model
  Garden's `build_resnet` gives its ResNet, padded as `pytorch_padding`
  says."""
  if backbone_config.type != 'gc_resnet':
    raise ValueError(f'build_gc_resnet got backbone type '
                     f'{backbone_config.type!r}.')
  config = backbone_config.get()
  return GCResNet(
      gc_levels=config.gc_levels,
      gc_ratio=config.gc_ratio,
      gc_pooling=config.gc_pooling,
      gc_fusion=config.gc_fusion,
      pytorch_padding=pytorch_padding,
      **resnet.resnet_arguments(input_specs, config, norm_activation_config,
                                l2_regularizer))
