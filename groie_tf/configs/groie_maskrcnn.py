"""Config dataclasses: Model Garden's Mask R-CNN with a GRoIE block per branch.

`GRoIE` maps one to one onto the arguments of `groie_tf.layers.GRoIE`
(`crop_size` stays where Model Garden keeps it: `roi_aligner.crop_size` and
`mask_roi_aligner.crop_size`). A branch whose block is None keeps Model
Garden's stock `MultilevelROIAligner`: that is the baseline, built by the
same code.
"""

import dataclasses
import os
from typing import Any, Dict, Optional

from official.core import config_definitions as cfg
from official.modeling import hyperparams
from official.vision.configs import maskrcnn as maskrcnn_config

from groie_tf.data import shapes


@dataclasses.dataclass
class GRoIE(hyperparams.Config):
  """Arguments of one `groie_tf.layers.GRoIE` (see its docstring)."""
  min_level: int = 2
  max_level: int = 5
  sampling_ratio: int = 2
  aligned: bool = True
  level_selection: str = 'all'
  aggregation: str = 'sum'
  pre_processing: str = 'conv5x5'
  post_processing: str = 'attention'
  share_pre_processing: bool = True
  attention_num_heads: int = 6
  mmcv_compat: bool = False
  roi_align_implementation: str = 'auto'
  seed: Optional[int] = None


@dataclasses.dataclass
class GRoIEMaskRCNN(maskrcnn_config.MaskRCNN):
  """Mask R-CNN whose box and mask RoI extractors may be GRoIE."""
  box_groie: Optional[GRoIE] = dataclasses.field(default_factory=GRoIE)
  mask_groie: Optional[GRoIE] = dataclasses.field(default_factory=GRoIE)


@dataclasses.dataclass
class GRoIEMaskRCNNTask(maskrcnn_config.MaskRCNNTask):
  """Model Garden's task config, plus the optional built-in data set.

  With `shapes_data` set, the task generates that set on first use and reads
  it: `GRoIEExperimentConfig.validate()` sets the train and validation input
  paths and the annotation file from it, and they must be left empty.
  """
  model: GRoIEMaskRCNN = dataclasses.field(default_factory=GRoIEMaskRCNN)
  shapes_data: Optional[shapes.ShapesDataset] = None
  # Seeds Python, NumPy and TensorFlow (weight initialisation, shuffling)
  # before the model is built; None leaves them random.
  seed: Optional[int] = None


def groie_layer_kwargs(block: GRoIE, crop_size: int) -> Dict[str, Any]:
  """The one place where a GRoIE config block becomes layer arguments."""
  kwargs = block.as_dict()
  kwargs['crop_size'] = crop_size
  return kwargs


def validate_groie_model(model: GRoIEMaskRCNN, prefix: str = 'task.model'):
  """Raises ValueError naming the config field of an invalid GRoIE option.

  Builds each configured layer (construction validates every argument), so
  the rules live in one place: `groie_tf.layers.GRoIE.__init__`.
  """
  from groie_tf.layers import GRoIE as GRoIELayer  # pylint: disable=g-import-not-at-top
  branches = [('box_groie', model.box_groie, model.roi_aligner.crop_size)]
  if model.include_mask:
    branches.append(('mask_groie', model.mask_groie,
                     model.mask_roi_aligner.crop_size))
  for name, block, crop_size in branches:
    if block is None:
      continue
    try:
      GRoIELayer(**groie_layer_kwargs(block, crop_size))
    except (TypeError, ValueError) as error:
      raise ValueError(f'{prefix}.{name}: {error}') from error
    if block.max_level > model.max_level or block.min_level < model.min_level:
      raise ValueError(
          f'{prefix}.{name}: levels {block.min_level}..{block.max_level} are '
          f'outside the FPN levels {model.min_level}..{model.max_level} of '
          f'{prefix}.')


def shapes_data_paths(data: shapes.ShapesDataset) -> Dict[str, str]:
  """The task fields that read the built-in set `data`."""
  directory = shapes.dataset_dir(data)
  return {'train_data.input_path': os.path.join(directory, 'train-*'),
          'validation_data.input_path': os.path.join(directory, 'val-*'),
          'annotation_file': os.path.join(directory, 'instances_val.json')}


def point_to_shapes_data(task: GRoIEMaskRCNNTask, prefix: str = 'task'):
  """Sets the data paths of `task` to its built-in set, if it has one.

  Raises:
    ValueError: if the config names both the built-in set and other data.
  """
  if task.shapes_data is None:
    return
  expected = shapes_data_paths(task.shapes_data)
  given = {'train_data.input_path': task.train_data.input_path,
           'validation_data.input_path': task.validation_data.input_path,
           'annotation_file': task.annotation_file}
  conflicts = [f'{prefix}.{k}' for k, v in given.items()
               if v and v != expected[k]]
  if conflicts:
    raise ValueError(
        f'{prefix}.shapes_data selects the built-in data set, but '
        f'{", ".join(conflicts)} name other data. To train on your own data, '
        f'also set {prefix}.shapes_data to null.')
  task.train_data.input_path = expected['train_data.input_path']
  task.validation_data.input_path = expected['validation_data.input_path']
  task.annotation_file = expected['annotation_file']


@dataclasses.dataclass
class GRoIEExperimentConfig(cfg.ExperimentConfig):
  """An experiment whose `validate()` also checks the GRoIE blocks.

  It also points the inputs at the built-in data set when the task has one
  (`point_to_shapes_data`): Model Garden validates a config after the
  overrides and before locking it, so that is where derived fields belong.
  """
  task: GRoIEMaskRCNNTask = dataclasses.field(default_factory=GRoIEMaskRCNNTask)

  def validate(self):
    super().validate()
    validate_groie_model(self.task.model)
    point_to_shapes_data(self.task)
