"""Config dataclasses of Grid R-CNN (Plus) with GRoIE extractors.

Defaults are mmdetection's `grid_rcnn_r50_fpn_gn-head` (the Grid R-CNN rows
of GRoIE's Table V): a classification-only box head, a GridHead on 14x14
RoI features with 8 convs and GroupNorm(36), up to 192 jittered positives
per replica, loss weight 15.
"""

import dataclasses
from typing import Optional

from official.modeling import hyperparams
from official.vision.configs import maskrcnn as maskrcnn_config

from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.errors import ConfigError
from groie_tf.layers import grid_head as grid_head_layer


@dataclasses.dataclass
class GridHead(hyperparams.Config):
  """Arguments of `groie_tf.layers.GridHead`."""
  num_convs: int = 8
  point_channels: int = 64
  norm_groups: int = 36


@dataclasses.dataclass
class GridRCNN(groie_config.GRoIEMaskRCNN):
  """Grid R-CNN: the detector of `GRoIEMaskRCNN` without masks, whose box
  head only classifies, plus the grid branch.

  - grid_roi_aligner: the grid branch's stock aligner (crop 14), used when
    `grid_groie` is None;
  - grid_groie: the grid branch's GRoIE block;
  - max_num_grid: positives trained per replica (mmdetection: 192 per GPU);
  - jitter_amplitude: of the uniform jitter of those positives;
  - pos_radius: of the positive disc in the targets, in map cells.
  """
  include_mask: bool = False
  grid_head: GridHead = dataclasses.field(default_factory=GridHead)
  grid_roi_aligner: maskrcnn_config.ROIAligner = dataclasses.field(
      default_factory=lambda: maskrcnn_config.ROIAligner(crop_size=14))
  grid_groie: Optional[groie_config.GRoIEBlock] = dataclasses.field(
      default_factory=groie_config.GRoIEBlock)
  max_num_grid: int = 192
  jitter_amplitude: float = 0.15
  pos_radius: int = 1


@dataclasses.dataclass
class GridLosses(maskrcnn_config.Losses):
  """Model Garden's losses plus the grid loss's weight; no box regression."""
  frcnn_box_weight: float = 0.0
  grid_weight: float = 15.0


@dataclasses.dataclass
class GridRCNNTask(groie_config.GRoIEMaskRCNNTask):
  model: GridRCNN = dataclasses.field(default_factory=GridRCNN)
  losses: GridLosses = dataclasses.field(default_factory=GridLosses)


def validate_grid_model(model: GridRCNN, prefix: str = 'task.model') -> None:
  """Raises ConfigError naming the field of a bad grid option."""
  if model.include_mask:
    raise ConfigError(f'{prefix}.include_mask: Grid R-CNN has no mask branch.')
  if model.grid_roi_aligner.crop_size != 14:
    raise ConfigError(f'{prefix}.grid_roi_aligner.crop_size must be 14 (the '
                     f'GridHead takes 14x14 features), got '
                     f'{model.grid_roi_aligner.crop_size}.')
  try:
    grid_head_layer.GridHead(**model.grid_head.as_dict())
  except ValueError as error:
    raise ConfigError(f'{prefix}.grid_head: {error}') from error
  if model.max_num_grid < 1:
    raise ConfigError(f'{prefix}.max_num_grid must be >= 1, got '
                     f'{model.max_num_grid}.')
  if not 0 <= model.jitter_amplitude < 1:
    raise ConfigError(f'{prefix}.jitter_amplitude must be in [0, 1), got '
                     f'{model.jitter_amplitude}.')
  if model.pos_radius < 0:
    raise ConfigError(f'{prefix}.pos_radius must be >= 0, got '
                     f'{model.pos_radius}.')
  groie_config.validate_groie_block(model.grid_groie,
                                    model.grid_roi_aligner.crop_size, model,
                                    f'{prefix}.grid_groie')


@dataclasses.dataclass
class GridRCNNExperimentConfig(groie_config.GRoIEExperimentConfig):
  task: GridRCNNTask = dataclasses.field(default_factory=GridRCNNTask)

  def validate(self):
    validate_grid_model(self.task.model)  # first: include_mask is checked
    super().validate()
