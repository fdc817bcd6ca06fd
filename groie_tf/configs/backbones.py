"""Backbone configs: Model Garden's, plus GCNet's ResNet (`gc_resnet`).

`task.model.backbone.type: gc_resnet` selects `GCResNet`; its fields are
Model Garden's ResNet fields plus the context blocks' (defaults: mmdetection's
`r4_gcb_c3-c5`, GRoIE's Table V GC-Net row).
"""

import dataclasses
from typing import List

from official.vision.configs import backbones

from groie_tf.layers import context_block
from groie_tf.modeling import gc_resnet


@dataclasses.dataclass
class GCResNet(backbones.ResNet):
  """`groie_tf.modeling.gc_resnet.GCResNet`: a context block in every
  block of the stages `gc_levels` (levels 2..5 are c2..c5)."""
  gc_levels: List[int] = dataclasses.field(default_factory=lambda: [3, 4, 5])
  gc_ratio: float = 1 / 4
  gc_pooling: str = 'att'
  gc_fusion: List[str] = dataclasses.field(
      default_factory=lambda: ['channel_add'])


@dataclasses.dataclass
class Backbone(backbones.Backbone):
  """Model Garden's backbone choice, with `gc_resnet` added."""
  gc_resnet: GCResNet = dataclasses.field(default_factory=GCResNet)


def validate_backbone(backbone: Backbone, prefix: str) -> None:
  """Raises ValueError naming the field of a bad `gc_resnet` option (the
  layers' own checks, run without building the backbone)."""
  if backbone.type != 'gc_resnet':
    return
  config = backbone.gc_resnet
  try:
    levels = gc_resnet.check_gc_levels(config.gc_levels)
  except ValueError as error:
    raise ValueError(f'{prefix}.gc_resnet.{error}') from error
  if config.se_ratio and levels:
    raise ValueError(f'{prefix}.gc_resnet.se_ratio: a block takes a context '
                     'block or squeeze-excitation, not both.')
  try:
    context_block.ContextBlock(ratio=config.gc_ratio,
                               pooling_type=config.gc_pooling,
                               fusion_types=config.gc_fusion)
  except ValueError as error:
    raise ValueError(f'{prefix}.gc_resnet: {error}') from error
