"""Backbone configs: Model Garden's, plus GCNet's ResNet (`gc_resnet`).

`task.model.backbone.type: gc_resnet` selects `GCResNet`; its fields are
Model Garden's ResNet fields plus the context blocks' (defaults: mmdetection's
`r4_gcb_c3-c5`, GRoIE's Table V GC-Net row).
"""

import dataclasses
from typing import List, Sequence, Tuple

from official.vision.configs import backbones

from groie_tf.errors import ConfigError
from groie_tf.layers import context_block


# The stages that can hold context blocks, by Model Garden's level: c2..c5
# are levels 2..5.
GC_LEVELS = (2, 3, 4, 5)


def check_gc_levels(gc_levels: Sequence[int]) -> Tuple[int, ...]:
  """The levels, sorted; ValueError unless they are distinct c2..c5."""
  levels = tuple(sorted(gc_levels))
  if not set(levels) <= set(GC_LEVELS) or len(set(levels)) != len(levels):
    raise ValueError(f'gc_levels must be distinct levels among {GC_LEVELS} '
                     f'(c2..c5), got {list(gc_levels)}.')
  return levels


@dataclasses.dataclass
class GCResNet(backbones.ResNet):
  """The arguments of `groie_tf.modeling.gc_resnet.GCResNet`: a context
  block in every
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
  """Raises ConfigError naming the field of a bad `gc_resnet` option (the
  layers' own checks, run without building the backbone)."""
  if backbone.type != 'gc_resnet':
    return
  config = backbone.gc_resnet
  try:
    levels = check_gc_levels(config.gc_levels)
  except ValueError as error:
    raise ConfigError(f'{prefix}.gc_resnet.{error}') from error
  if config.se_ratio and levels:
    raise ConfigError(f'{prefix}.gc_resnet.se_ratio: a block takes a context '
                     'block or squeeze-excitation, not both.')
  try:
    context_block.ContextBlock(ratio=config.gc_ratio,
                               pooling_type=config.gc_pooling,
                               fusion_types=config.gc_fusion)
  except ValueError as error:
    raise ConfigError(f'{prefix}.gc_resnet: {error}') from error
