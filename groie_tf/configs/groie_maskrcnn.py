"""Config dataclasses: Model Garden's Mask R-CNN with a GRoIE block per branch.

`GRoIEBlock` maps one to one onto the arguments of `groie_tf.layers.GRoIE`,
whose signature gives its defaults (`crop_size` stays where Model Garden
keeps it: `roi_aligner.crop_size` and `mask_roi_aligner.crop_size`). A
branch whose block is None keeps Model Garden's stock
`MultilevelROIAligner`: that is the baseline, built by the same code.
"""

import dataclasses
import inspect
import os
from typing import Any, Dict, List, Optional

from official.core import config_definitions as cfg
from official.modeling import hyperparams
from official.vision.configs import maskrcnn as maskrcnn_config

from groie_tf import precision
from groie_tf.configs import backbones
from groie_tf.data import shapes
from groie_tf.errors import ConfigError
from groie_tf.layers import groie as groie_layer

# The detectors around the RoI extractors: Model Garden's own, or
# mmdetection's layer for layer (`groie_tf.modeling.mmdetection_layout`).
LAYOUTS = ('model_garden', 'mmdetection')

# mmdetection's range: -1 freezes nothing, 0 the stem, k the stem and
# stages 1..k (stage 1 is C2, stride 4).
FROZEN_STAGES_RANGE = (-1, 4)

_LAYER_DEFAULTS = {
    name: parameter.default for name, parameter in
    inspect.signature(groie_layer.GRoIE.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty}


@dataclasses.dataclass
class GRoIEBlock(hyperparams.Config):
  """Arguments of one `groie_tf.layers.GRoIE` (see its docstring); the
  defaults are the layer's own."""
  min_level: int = _LAYER_DEFAULTS['min_level']
  max_level: int = _LAYER_DEFAULTS['max_level']
  sampling_ratio: int = _LAYER_DEFAULTS['sampling_ratio']
  aligned: bool = _LAYER_DEFAULTS['aligned']
  level_selection: str = _LAYER_DEFAULTS['level_selection']
  canonical_size: float = _LAYER_DEFAULTS['canonical_size']
  aggregation: str = _LAYER_DEFAULTS['aggregation']
  pre_processing: str = _LAYER_DEFAULTS['pre_processing']
  post_processing: str = _LAYER_DEFAULTS['post_processing']
  share_pre_processing: bool = _LAYER_DEFAULTS['share_pre_processing']
  attention_num_heads: int = _LAYER_DEFAULTS['attention_num_heads']
  mmcv_compat: bool = _LAYER_DEFAULTS['mmcv_compat']
  roi_align_implementation: str = _LAYER_DEFAULTS['roi_align_implementation']
  seed: Optional[int] = _LAYER_DEFAULTS['seed']


@dataclasses.dataclass
class GRoIEMaskRCNN(maskrcnn_config.MaskRCNN):
  """Mask R-CNN whose box and mask RoI extractors may be GRoIE.

  `frozen_stages` and `norm_eval` are mmdetection's ResNet options, which
  every detector of the paper uses (1 and True); the defaults keep Model
  Garden's behaviour (`groie_tf.modeling.backbone_freezing` applies them):

  - frozen_stages: -1 trains the whole backbone; 0 freezes the stem; k in
    1..4 the stem and stages 1..k. ResNet backbones only (plain or GC).
  - norm_eval: the backbone's batch norms use their moving statistics in
    training too, and never update them; their scale and offset train.

  `backbone` adds GCNet's ResNet (`type: gc_resnet`) to Model Garden's
  choices; both ResNets take `frozen_stages` and `norm_eval`.

  `layout`: 'model_garden' builds Model Garden's detector; 'mmdetection'
  builds mmdetection's, layer for layer (`docs/fidelity.md`): the ResNet
  padded as PyTorch pads, mmdetection's FPN and heads without
  normalisation, its anchors and proposals, and its RoI extractor
  (adaptive RoIAlign sampling, one level per RoI) where a GRoIE block is
  null. Faster and Mask R-CNN, plain or GC ResNet.

  `test_scale`: the mmdetection layout's evaluation and serving resize,
  mmdetection's `Resize(scale=(long, short), keep_ratio=True)` with a
  canvas per image (`groie_tf.data.mmdetection_resize`); `input_size` stays
  the training size. Unused in the model_garden layout.
  """
  backbone: backbones.Backbone = dataclasses.field(
      default_factory=lambda: backbones.Backbone(type='resnet'))
  box_groie: Optional[GRoIEBlock] = dataclasses.field(
      default_factory=GRoIEBlock)
  mask_groie: Optional[GRoIEBlock] = dataclasses.field(
      default_factory=GRoIEBlock)
  frozen_stages: int = -1
  norm_eval: bool = False
  layout: str = 'model_garden'
  test_scale: List[int] = dataclasses.field(
      default_factory=lambda: [1333, 800])


@dataclasses.dataclass
class GRoIEMaskRCNNTask(maskrcnn_config.MaskRCNNTask):
  """Model Garden's task config, plus the optional built-in data set.

  With `shapes_data` set, the task generates that set on first use and reads
  it (`GRoIEMaskRCNNTask`); the train and validation input paths and the
  annotation file must then be left empty.
  """
  model: GRoIEMaskRCNN = dataclasses.field(default_factory=GRoIEMaskRCNN)
  shapes_data: Optional[shapes.ShapesDataset] = None
  # The task seeds Python, NumPy and TensorFlow with it (weight
  # initialisation, shuffling) when it is created; None leaves them random.
  seed: Optional[int] = None
  # Runs the input pipelines' maps on one thread. Model Garden's parser
  # draws its random flips and the RPN's anchor samples in a parallel map,
  # where the draws go to images in the order threads reach them: two runs
  # with the same seed then see different batches. On one thread they go
  # in image order, so a seeded run is reproducible (the ablation needs
  # it). For small images only: it serialises the decoding.
  deterministic_input: bool = False
  # Training refuses to freeze backbone weights or batch-norm statistics
  # that no checkpoint initialises (`check_frozen_backbone_initialized`);
  # true trains them frozen at their random initialisation all the same.
  allow_random_frozen_backbone: bool = False
  # Training records whose image or masks do not decode are skipped (each
  # named in the log, with a running count) instead of stopping the run
  # (`groie_tf.data.bad_records`).
  skip_bad_records: bool = False


def groie_layer_kwargs(block: GRoIEBlock, crop_size: int) -> Dict[str, Any]:
  """The one place where a GRoIE config block becomes layer arguments."""
  kwargs = block.as_dict()
  kwargs['crop_size'] = crop_size
  return kwargs


def validate_groie_model(model: GRoIEMaskRCNN, prefix: str = 'task.model'):
  """Raises ConfigError naming the config field of an invalid GRoIE, GC
  backbone or backbone-freezing option.

  Builds each configured layer (construction validates every argument), so
  the rules live in one place: `groie_tf.layers.GRoIE.__init__`.
  """
  branches = [('box_groie', model.box_groie, model.roi_aligner.crop_size)]
  if model.include_mask:
    branches.append(('mask_groie', model.mask_groie,
                     model.mask_roi_aligner.crop_size))
  for name, block, crop_size in branches:
    validate_groie_block(block, crop_size, model, f'{prefix}.{name}')
  backbones.validate_backbone(model.backbone, f'{prefix}.backbone')
  _validate_backbone_freezing(model, prefix)
  _validate_layout(model, prefix)


def _validate_layout(model: GRoIEMaskRCNN, prefix: str) -> None:
  """Raises ConfigError for an unknown layout, or an mmdetection layout of
  a detector it does not build."""
  if model.layout not in LAYOUTS:
    raise ConfigError(f'{prefix}.layout must be one of {LAYOUTS}, got '
                      f'{model.layout!r}.')
  if model.layout != 'mmdetection':
    return
  refusals = [
      (model.backbone.type not in ('resnet', 'gc_resnet'),
       f"{prefix}.backbone.type must be 'resnet' or 'gc_resnet', got "
       f'{model.backbone.type!r}'),
      (model.decoder.type != 'fpn',
       f"{prefix}.decoder.type must be 'fpn', got {model.decoder.type!r}"),
      (bool(model.roi_sampler.cascade_iou_thresholds),
       f'{prefix}.roi_sampler.cascade_iou_thresholds must be empty: Cascade '
       'R-CNN is built in the model_garden layout only'),
      (model.detection_head.num_convs != 0,
       f'{prefix}.detection_head.num_convs must be 0 (Shared2FCBBoxHead), '
       f'got {model.detection_head.num_convs}'),
      (model.detection_head.class_agnostic_bbox_pred,
       f'{prefix}.detection_head.class_agnostic_bbox_pred must be false'),
      (model.rpn_head.num_convs != 1,
       f'{prefix}.rpn_head.num_convs must be 1, got '
       f'{model.rpn_head.num_convs}'),
  ]
  if model.include_mask:
    refusals += [
        (model.mask_head.upsample_factor != 2,
         f'{prefix}.mask_head.upsample_factor must be 2, got '
         f'{model.mask_head.upsample_factor}'),
        (model.mask_head.class_agnostic,
         f'{prefix}.mask_head.class_agnostic must be false')]
  scale = model.test_scale
  refusals.append((
      len(scale) != 2 or not all(isinstance(v, int) and not isinstance(
          v, bool) and v > 0 for v in scale),
      f'{prefix}.test_scale must be two positive ints (long and short edge, '
      f'mmdetection\'s [1333, 800]), got {list(scale)!r}'))
  problems = [message for refused, message in refusals if refused]
  if problems:
    raise ConfigError(f'{prefix}.layout is mmdetection, so ' +
                      '; '.join(problems) + '.')


def validate_groie_block(block: Optional[GRoIEBlock], crop_size: int,
                         model: GRoIEMaskRCNN, name: str) -> None:
  """Raises ConfigError naming `name` if the block's layer cannot be built
  or reads levels outside the model's FPN; None (stock aligner) passes."""
  if block is None:
    return
  try:
    groie_layer.GRoIE(**groie_layer_kwargs(block, crop_size))
  except (TypeError, ValueError) as error:
    raise ConfigError(f'{name}: {error}') from error
  if block.max_level > model.max_level or block.min_level < model.min_level:
    prefix = name.rsplit('.', 1)[0]
    raise ConfigError(
        f'{name}: levels {block.min_level}..{block.max_level} are outside '
        f'the FPN levels {model.min_level}..{model.max_level} of {prefix}.')


def _validate_backbone_freezing(model: GRoIEMaskRCNN, prefix: str):
  low, high = FROZEN_STAGES_RANGE
  stages = model.frozen_stages
  if isinstance(stages, bool) or not isinstance(stages, int) or not (
      low <= stages <= high):
    raise ConfigError(f'{prefix}.frozen_stages must be an int in {low}..{high} '
                     f'(-1: none, 0: the stem, k: the stem and stages 1..k), '
                     f'got {stages!r}.')
  if not isinstance(model.norm_eval, bool):
    raise ConfigError(f'{prefix}.norm_eval must be true or false, got '
                     f'{model.norm_eval!r}.')
  if (stages >= 0 or model.norm_eval) and model.backbone.type not in (
      'resnet', 'gc_resnet'):
    raise ConfigError(
        f'{prefix}.frozen_stages and {prefix}.norm_eval need '
        f"{prefix}.backbone.type 'resnet' or 'gc_resnet', got "
        f'{model.backbone.type!r}: set them to -1 and false.')


def check_frozen_backbone_initialized(task: GRoIEMaskRCNNTask,
                                      prefix: str = 'task') -> None:
  """Raises ConfigError if training would freeze backbone weights or
  batch-norm statistics that no checkpoint initialises.

  mmdetection's `frozen_stages` and `norm_eval` (every paper config) and
  Model Garden's `task.freeze_backbone` assume an ImageNet backbone; with
  `task.init_checkpoint` empty they keep the random initialisation for the
  whole run, without a word. Training only: evaluation and export restore
  a trained model.
  """
  model = task.model
  frozen = [setting for setting, on in (
      (f'{prefix}.model.frozen_stages={model.frozen_stages}',
       model.frozen_stages >= 0),
      (f'{prefix}.model.norm_eval=true', model.norm_eval),
      (f'{prefix}.freeze_backbone=true', task.freeze_backbone)) if on]
  modules = task.init_checkpoint_modules
  modules = [modules] if isinstance(modules, str) else list(modules or ())
  restores_backbone = bool(task.init_checkpoint) and (
      'all' in modules or 'backbone' in modules)
  if not frozen or restores_backbone or task.allow_random_frozen_backbone:
    return
  raise ConfigError(
      f'{" and ".join(frozen)} freeze backbone weights or batch-norm '
      f'statistics, but {prefix}.init_checkpoint restores no backbone '
      f'(init_checkpoint {task.init_checkpoint!r}, init_checkpoint_modules '
      f'{task.init_checkpoint_modules!r}): they would stay at their random '
      f'initialisation. Either set {prefix}.init_checkpoint to an ImageNet '
      f'backbone checkpoint with {prefix}.init_checkpoint_modules=backbone '
      '(docs/training.md, "An ImageNet backbone"), or train the whole '
      f'backbone: {prefix}.model.frozen_stages=-1,{prefix}.model.norm_eval='
      f'false,{prefix}.freeze_backbone=false. To train frozen random '
      f'weights on purpose: {prefix}.allow_random_frozen_backbone=true.')


def check_precision(runtime: cfg.RuntimeConfig, prefix: str = 'runtime'):
  """Raises ConfigError unless the compute dtype is one `precision` knows."""
  if runtime.mixed_precision_dtype not in precision.VALUES:
    raise ConfigError(
        f'{prefix}.mixed_precision_dtype must be one of '
        f'{", ".join(str(v) for v in precision.VALUES if v)} or null, got '
        f'{runtime.mixed_precision_dtype!r}.')


def shapes_data_paths(data: shapes.ShapesDataset) -> Dict[str, str]:
  """The task fields that read the built-in set `data`."""
  directory = shapes.dataset_dir(data)
  return {'train_data.input_path': os.path.join(directory, 'train-*'),
          'validation_data.input_path': os.path.join(directory, 'val-*'),
          'annotation_file': os.path.join(directory, 'instances_val.json')}


def check_shapes_data_paths(task: GRoIEMaskRCNNTask, prefix: str = 'task'):
  """Raises ConfigError if the config names the built-in set and other data.

  The task fills the empty paths when it reads the built-in set
  (`GRoIEMaskRCNNTask`).
  """
  if task.shapes_data is None:
    return
  given = {'train_data.input_path': task.train_data.input_path,
           'validation_data.input_path': task.validation_data.input_path,
           'annotation_file': task.annotation_file}
  # The built-in paths themselves are fine: earlier versions wrote them into
  # the params.yaml of a run.
  expected = shapes_data_paths(task.shapes_data)
  conflicts = [f'{prefix}.{k}' for k, v in given.items()
               if v and v != expected[k]]
  if conflicts:
    raise ConfigError(
        f'{prefix}.shapes_data selects the built-in data set, but '
        f'{", ".join(conflicts)} name other data. To train on your own data, '
        f'also set {prefix}.shapes_data to null.')


def check_loop_intervals(trainer: cfg.TrainerConfig, prefix: str = 'trainer'):
  """Raises ConfigError now for what Orbit would refuse after building the model.

  Orbit writes summaries between loops of `steps_per_loop` steps.
  """
  loop, summary = trainer.steps_per_loop, trainer.summary_interval
  if loop <= 0:
    raise ConfigError(f'{prefix}.steps_per_loop must be positive, got {loop}.')
  if summary and summary > 0 and summary % loop:
    raise ConfigError(
        f'{prefix}.summary_interval ({summary}) must be a multiple of '
        f'{prefix}.steps_per_loop ({loop}): set both, for example '
        f'{prefix}.steps_per_loop={loop},{prefix}.summary_interval={loop}.')


@dataclasses.dataclass
class GRoIEExperimentConfig(cfg.ExperimentConfig):
  """An experiment whose `validate()` also checks the GRoIE blocks and that
  the built-in data set and the user's data are not both named."""
  task: GRoIEMaskRCNNTask = dataclasses.field(default_factory=GRoIEMaskRCNNTask)

  def validate(self):
    super().validate()
    validate_groie_model(self.task.model)
    check_shapes_data_paths(self.task)
    check_loop_intervals(self.trainer)
    check_precision(self.runtime)
