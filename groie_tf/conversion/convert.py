"""An mmdetection checkpoint into a groie-tf model_dir (and a SavedModel).

`convert_mmdet_checkpoint.py` runs `convert`. The steps:

1. read the checkpoint: a `.pth` without PyTorch (`torch_pickle`), or a
   `.npz` of its state dict;
2. recognise the published model (`published.recognise`: its weights, and
   the config name in `meta` or given);
3. its experiment: the registered experiment with `configs/paper/`'s base,
   row and mmdetection-layout overlay, then what the weights fix (class
   count, attention heads, mmcv's attention arithmetic), then the user's
   config files and overrides;
4. build it with the one builder, map every tensor (`mmdet_state_dict`,
   which names every key left unused and every variable left unset);
5. write `ckpt-0` and `params.yaml`: a model_dir that `train.py` and
   `export_saved_model.py` take as a trained one.
"""

import dataclasses
import os
import pathlib
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging
from official.core import config_definitions as cfg
from official.core import train_utils

from groie_tf.configs import loading
from groie_tf.conversion import mmdet_state_dict
from groie_tf.conversion import published
from groie_tf.conversion import torch_pickle
from groie_tf.errors import CheckpointError
from groie_tf.errors import ConfigError
from groie_tf.modeling import builder

# configs/paper/ of the checkout this package runs from.
PAPER_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'paper'
_EXTRACTORS = {  # config block -> mmdetection's extractor key prefix
    'box_groie': 'roi_head.bbox_roi_extractor.',
    'mask_groie': 'roi_head.mask_roi_extractor.',
    'grid_groie': 'roi_head.grid_roi_extractor.',
}


def read_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], Mapping]:
  """(state dict, meta) of a `.pth` (mmdetection's `{'meta', 'state_dict'}`
  or a bare state dict) or of a `.npz` (its arrays are the state dict)."""
  if not os.path.isfile(path):
    raise CheckpointError(f'no checkpoint file at {path}.')
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as data:
      return dict(data), {}
  content = torch_pickle.load(path)
  if not isinstance(content, Mapping):
    raise CheckpointError(f'{path} holds a {type(content).__name__}, not '
                          'a checkpoint dict.')
  state_dict = content.get('state_dict', content)
  meta = content.get('meta') or {}
  arrays = {k: v for k, v in state_dict.items() if isinstance(v, np.ndarray)}
  if len(arrays) != len(state_dict) or not arrays:
    raise CheckpointError(f'{path} has no state dict of tensors.')
  return arrays, meta if isinstance(meta, Mapping) else {}


def _class_count(state_dict: Mapping[str, np.ndarray]) -> int:
  """The box classifier's classes (its rows less the background)."""
  key = 'roi_head.bbox_head.fc_cls.weight'
  if key not in state_dict:
    raise CheckpointError(f'the state dict has no {key!r}: not a two-stage '
                          'detector of mmdetection.')
  return state_dict[key].shape[0] - 1


def _checked_classes(state_dict: Mapping[str, np.ndarray],
                     meta: Mapping) -> int:
  """The checkpoint's class count; a COCO model's names must be COCO's."""
  num_classes = _class_count(state_dict)
  names = published.class_names(meta)
  if names is not None and len(names) != num_classes:
    raise CheckpointError(f'meta names {len(names)} classes, the box head '
                          f'has {num_classes}.')
  # mmdetection 2.x wrote 'traffic_light' where 3.x writes 'traffic light'.
  if (names is not None and num_classes == len(published.COCO_CLASS_NAMES)
      and tuple(n.replace('_', ' ') for n in names) !=
      published.COCO_CLASS_NAMES):
    raise CheckpointError('the checkpoint\'s 80 classes are not COCO\'s, in '
                          'COCO\'s order: their category ids are unknown.')
  return num_classes


def _attention_heads(model_config, state_dict,
                     model: published.PublishedModel) -> Dict[str, int]:
  """Each GRoIE block's attention head count: mmdetection's configs' 6,
  checked against the weights' shapes."""
  heads = {}
  for block, prefix in _EXTRACTORS.items():
    config = getattr(model_config, block, None)
    if config is None or config.post_processing != 'attention':
      continue
    key = prefix + 'post_module.query_conv.weight'
    if key not in state_dict:
      raise CheckpointError(f'{model.name} has attention in its {block}, '
                            f'but the checkpoint has no {key}.')
    allowed = published.attention_heads(state_dict[key])
    if published.ATTENTION_HEADS not in allowed:
      raise CheckpointError(
          f'{key} {list(state_dict[key].shape)} fits {list(allowed)} '
          f'attention heads, not the {published.ATTENTION_HEADS} of '
          f'{model.name}.')
    heads[block] = published.ATTENTION_HEADS
  return heads


def experiment_params(model: published.PublishedModel,
                      state_dict: Mapping[str, np.ndarray], meta: Mapping,
                      config_files: Sequence[str] = (),
                      params_override: str = '') -> cfg.ExperimentConfig:
  """The experiment of `model` that the checkpoint's weights fit.

  `config_files` and `params_override` come last, as in training (a
  different test scale or score threshold, say); the class count and the
  attention heads are the weights'.
  """
  files = [str(PAPER_CONFIGS / f'{name}.yaml')
           for name in ('base_1x_8gpu', model.row, 'mmdetection_layout')]
  missing = [f for f in files if not os.path.exists(f)]
  if missing:
    raise ConfigError(f'{missing[0]} is missing: the converter reads '
                      'configs/paper/ of a groie-tf checkout (pip install -e).')
  params = loading.load_experiment(model.experiment, files)
  num_classes = _checked_classes(state_dict, meta)
  _, model_classes = published.class_columns(num_classes)
  groie_blocks = [block for block in _EXTRACTORS
                  if getattr(params.task.model, block, None) is not None]
  # A converted model runs anywhere: every visible GPU (the CPU without
  # one), one image per replica in evaluation (the mmdetection layout's
  # canvas per image). No other checkpoint is loaded into it; one that
  # fine-tunes it sets task.init_checkpoint to it, whole.
  with loading.config_errors():
    params.override({
        'runtime': {'num_gpus': 0},
        'task': {'init_checkpoint': '', 'init_checkpoint_modules': 'all',
                 'validation_data': {'global_batch_size': 1},
                 'model': {'num_classes': model_classes,
                           **{block: {'mmcv_compat': True}
                              for block in groie_blocks}}}}, is_strict=True)
    for block, count in _attention_heads(params.task.model, state_dict,
                                         model).items():
      params.override({'task': {'model': {block: {
          'attention_num_heads': count}}}}, is_strict=True)
  # The user's files and overrides come last, as in training.
  return loading.overridden(params, config_files, params_override)


@dataclasses.dataclass
class Conversion:
  """What `convert` made."""
  model: published.PublishedModel
  params: cfg.ExperimentConfig
  checkpoint: str  # the ckpt-0 prefix written
  seconds: float


def build_converted(params: cfg.ExperimentConfig,
                    state_dict: Mapping[str, np.ndarray]) -> tf_keras.Model:
  """The experiment's model with the checkpoint's weights, every tensor
  mapped and every variable set."""
  model_config = params.task.model
  model = builder.build_model(
      model_config,
      tf_keras.layers.InputSpec(shape=[None] + model_config.input_size))
  columns, _ = published.class_columns(_class_count(state_dict))
  try:
    mmdet_state_dict.load_state_dict(model, state_dict, class_columns=columns)
  except (KeyError, ValueError) as error:
    raise CheckpointError(str(error).strip('"')) from None
  return model


def convert(checkpoint: str, output_dir: str, config: Optional[str] = None,
            config_files: Sequence[str] = (),
            params_override: str = '') -> Conversion:
  """Converts an mmdetection checkpoint of a published GRoIE model.

  Args:
    checkpoint: a `.pth` or a `.npz` of the state dict.
    output_dir: gets `ckpt-0` (the model, as a trainer's checkpoint holds
      it) and `params.yaml`.
    config: mmdetection's config name, when `meta` does not give it (or to
      check that it is this one).
    config_files, params_override: applied last.

  Raises:
    CheckpointError, ConfigError: one line on what does not fit.
  """
  start = time.perf_counter()
  state_dict, meta = read_checkpoint(checkpoint)
  model = published.recognise(list(state_dict), meta, config)
  params = experiment_params(model, state_dict, meta, config_files,
                             params_override)
  logging.info('%s is %s (experiment %s, configs/paper/%s.yaml).',
               checkpoint, model.name, model.experiment, model.row)
  detector = build_converted(params, state_dict)
  tf.io.gfile.makedirs(output_dir)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=detector),
                                       output_dir, max_to_keep=1)
  path = manager.save(checkpoint_number=0)
  train_utils.serialize_config(params, output_dir)
  return Conversion(model, params, path, time.perf_counter() - start)
