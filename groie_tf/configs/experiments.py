"""Registered experiments (their names are the contract).

Each COCO experiment starts from Model Garden's registered experiment of the
same detector, so schedules, data and evaluation stay Model Garden's, adds
the GRoIE blocks and takes the paper's box head (see `docs/fidelity.md` for
every other setting against mmdetection's). Three of Model Garden's
settings change:

- Nothing is downloaded: `task.init_checkpoint` is cleared (Model Garden
  points it at `IMAGENET_RESNET50`, in a cloud bucket); set it to a local
  copy of a backbone checkpoint with `task.init_checkpoint_modules=backbone`.
- `runtime.mixed_precision_dtype` is 'auto' (Model Garden: bfloat16, which
  devices without native bfloat16 emulate slowly): `groie_tf.precision`.
- `trainer.validation_steps` is -1, the whole validation set (Model
  Garden: 625, COCO val2017's 5000 images in batches of 8, whatever the
  data); `groie_tf.training` counts the set for its progress lines.
"""

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import optimization
from official.vision.configs import backbones
from official.vision.configs import common
from official.vision.configs import decoders
from official.vision.configs import maskrcnn as maskrcnn_config

from groie_tf import precision
from groie_tf.configs import backbones as groie_backbones
from groie_tf.configs import grid_rcnn as grid_config
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import shapes

# Model Garden's ImageNet ResNet-50 (its `maskrcnn_resnetfpn_coco`'s
# init_checkpoint, with init_checkpoint_modules='backbone').
IMAGENET_RESNET50 = 'gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080'


def _from_model_garden(name: str) -> groie_config.GRoIEExperimentConfig:
  """Model Garden's experiment `name` as a GRoIE experiment."""
  stock = exp_factory.get_exp_config(name)
  task = groie_config.GRoIEMaskRCNNTask()
  task.override(stock.task.as_dict(), is_strict=False)
  task.init_checkpoint = ''
  # mmdetection's Shared2FCBBoxHead, the paper's: 2 FC layers of 1024 and no
  # conv (Model Garden's default is 4 convs + 1 FC).
  task.model.detection_head.num_convs = 0
  task.model.detection_head.num_fcs = 2
  task.model.detection_head.fc_dims = 1024
  stock.runtime.mixed_precision_dtype = precision.AUTO
  stock.trainer.validation_steps = -1
  return groie_config.GRoIEExperimentConfig(
      task=task, runtime=stock.runtime, trainer=stock.trainer,
      restrictions=stock.restrictions)


@exp_factory.register_config_factory('groie_maskrcnn_resnetfpn_coco')
def groie_maskrcnn_resnetfpn_coco() -> groie_config.GRoIEExperimentConfig:
  """Mask R-CNN R50-FPN with GRoIE in both branches (paper, Table V)."""
  return _from_model_garden('maskrcnn_resnetfpn_coco')


@exp_factory.register_config_factory('groie_fasterrcnn_resnetfpn_coco')
def groie_fasterrcnn_resnetfpn_coco() -> groie_config.GRoIEExperimentConfig:
  """Faster R-CNN R50-FPN with GRoIE (paper, Tables I-V)."""
  config = _from_model_garden('fasterrcnn_resnetfpn_coco')
  config.task.model.mask_groie = None
  return config


@exp_factory.register_config_factory('groie_cascadercnn_resnetfpn_coco')
def groie_cascadercnn_resnetfpn_coco() -> groie_config.GRoIEExperimentConfig:
  """Cascade Mask R-CNN R50-FPN with GRoIE; not in the paper.

  Model Garden's cascade settings (as in `cascadercnn_spinenet_coco`): IoU
  thresholds 0.6 and 0.7 after the first stage's 0.5, class-agnostic box
  regression and ensembled class scores. All stages share the box GRoIE.
  """
  config = _from_model_garden('maskrcnn_resnetfpn_coco')
  model = config.task.model
  model.roi_sampler.cascade_iou_thresholds = [0.6, 0.7]
  model.detection_head.class_agnostic_bbox_pred = True
  model.detection_head.cascade_class_ensemble = True
  return config


def _with_gc_backbone(config: groie_config.GRoIEExperimentConfig):
  """`config` with GCNet's ResNet (context blocks in c3-c5, ratio 1/4) in
  place of its ResNet, every other backbone field kept."""
  backbone = config.task.model.backbone
  backbone.gc_resnet.override(backbone.resnet.as_dict())
  backbone.type = 'gc_resnet'
  return config


@exp_factory.register_config_factory('gcnet_maskrcnn_resnetfpn_coco')
def gcnet_maskrcnn_resnetfpn_coco() -> groie_config.GRoIEExperimentConfig:
  """GC-Net: Mask R-CNN R50-FPN with GCNet's backbone, Model Garden's
  stock RoI aligners (R101: `backbone.gc_resnet.model_id=101`).

  Batch norm trains, synchronised across replicas, as in mmdetection's
  GC-Net configs (Model Garden's default, kept).
  """
  config = _with_gc_backbone(_from_model_garden('maskrcnn_resnetfpn_coco'))
  config.task.model.box_groie = None
  config.task.model.mask_groie = None
  return config


@exp_factory.register_config_factory('groie_gcnet_maskrcnn_resnetfpn_coco')
def groie_gcnet_maskrcnn_resnetfpn_coco() -> groie_config.GRoIEExperimentConfig:
  """GC-Net with GRoIE in both branches (paper, Table V)."""
  return _with_gc_backbone(_from_model_garden('maskrcnn_resnetfpn_coco'))


# The built-in data set: `train.py --mode=train_and_eval` took 27 minutes on
# 2 cores of an EPYC without AVX-512 (README).
_SHAPES_TRAIN_STEPS = 900
_SHAPES_BATCH_SIZE = 8


def _shapes_experiment(with_groie: bool) -> groie_config.GRoIEExperimentConfig:
  """Mask R-CNN sized for the built-in shapes set, with or without GRoIE."""
  data = shapes.ShapesDataset()
  size = data.image_size
  model = groie_config.GRoIEMaskRCNN(
      num_classes=len(shapes.CLASS_NAMES) + 1,  # background included
      input_size=[size, size, 3],
      min_level=2,
      max_level=6,
      anchor=maskrcnn_config.Anchor(anchor_size=4.0),
      backbone=groie_backbones.Backbone(
          type='resnet',
          resnet=backbones.ResNet(model_id=18, depth_multiplier=0.5)),
      decoder=decoders.Decoder(type='fpn', fpn=decoders.FPN(num_filters=48)),
      rpn_head=maskrcnn_config.RPNHead(num_filters=48),
      detection_head=maskrcnn_config.DetectionHead(
          num_convs=0, num_fcs=2, fc_dims=256),
      roi_generator=maskrcnn_config.ROIGenerator(
          pre_nms_top_k=1000, num_proposals=256, test_pre_nms_top_k=500,
          test_num_proposals=200),
      roi_sampler=maskrcnn_config.ROISampler(num_sampled_rois=64),
      mask_head=maskrcnn_config.MaskHead(num_convs=2, num_filters=48),
      mask_sampler=maskrcnn_config.MaskSampler(num_sampled_masks=16),
      detection_generator=maskrcnn_config.DetectionGenerator(
          max_num_detections=50),
      norm_activation=common.NormActivation(
          activation='relu', norm_momentum=0.9, norm_epsilon=1e-5,
          use_sync_bn=False),
  )
  if not with_groie:
    model.box_groie = None
    model.mask_groie = None

  def data_config(training: bool) -> maskrcnn_config.DataConfig:
    return maskrcnn_config.DataConfig(
        is_training=training,
        global_batch_size=_SHAPES_BATCH_SIZE,
        drop_remainder=training,
        dtype='float32',
        shuffle_buffer_size=1000,
        parser=maskrcnn_config.Parser(
            aug_rand_hflip=training, mask_crop_size=56))

  num_val = data.num_val_images
  task = groie_config.GRoIEMaskRCNNTask(
      model=model,
      shapes_data=data,
      seed=0,
      deterministic_input=True,
      losses=maskrcnn_config.Losses(l2_weight_decay=1e-4),
      train_data=data_config(training=True),
      validation_data=data_config(training=False),
      per_category_metrics=True)
  trainer = cfg.TrainerConfig(
      train_steps=_SHAPES_TRAIN_STEPS,
      validation_steps=-(-num_val // _SHAPES_BATCH_SIZE),
      validation_interval=_SHAPES_TRAIN_STEPS,
      steps_per_loop=50,
      summary_interval=50,
      checkpoint_interval=150,
      max_to_keep=2,
      optimizer_config=optimization.OptimizationConfig({
          'optimizer': {'type': 'sgd', 'sgd': {'momentum': 0.9,
                                               'global_clipnorm': 10.0}},
          'learning_rate': {
              'type': 'stepwise',
              'stepwise': {
                  'boundaries': [int(_SHAPES_TRAIN_STEPS * 0.8)],
                  'values': [0.04, 0.004]}},
          'warmup': {'type': 'linear',
                     'linear': {'warmup_steps': 100,
                                'warmup_learning_rate': 0.004}}}))
  return groie_config.GRoIEExperimentConfig(
      task=task, trainer=trainer,
      runtime=cfg.RuntimeConfig(distribution_strategy='mirrored'),
      restrictions=['task.train_data.is_training != None',
                    'task.validation_data.is_training != None'])


@exp_factory.register_config_factory('groie_maskrcnn_shapes')
def groie_maskrcnn_shapes() -> groie_config.GRoIEExperimentConfig:
  """GRoIE Mask R-CNN on the built-in shapes set (the README's main job)."""
  return _shapes_experiment(with_groie=True)


@exp_factory.register_config_factory('maskrcnn_shapes')
def maskrcnn_shapes() -> groie_config.GRoIEExperimentConfig:
  """The baseline twin: the same model and schedule, stock RoI aligners."""
  return _shapes_experiment(with_groie=False)


def in_mmdetection_layout(config: groie_config.GRoIEExperimentConfig):
  """`config`'s detector in the mmdetection layout (`task.model.layout`),
  with mmdetection's anchor order (its ratios h/w 0.5, 1, 2 are Model
  Garden's w/h 2, 1, 0.5), batch-norm epsilon (1e-5), GRoIE attention
  (`mmcv_compat`) and class-specific box outputs (`reg_class_agnostic`
  false, also in mmdetection's Grid R-CNN, whose box head outputs none),
  so that its weights and mmdetection's map one to one."""
  model = config.task.model
  model.layout = 'mmdetection'
  model.anchor.aspect_ratios = [2.0, 1.0, 0.5]
  model.norm_activation.norm_epsilon = 1e-5
  model.detection_head.class_agnostic_bbox_pred = False
  for block in (model.box_groie, model.mask_groie,
                getattr(model, 'grid_groie', None)):  # Grid R-CNN's
    if block is not None:
      block.mmcv_compat = True
  return config


def _shapes_in_mmdetection_layout(with_groie: bool):
  config = in_mmdetection_layout(_shapes_experiment(with_groie))
  # Evaluated at the size it trains at, as the model_garden layout is.
  size = config.task.shapes_data.image_size
  config.task.model.test_scale = [size, size]
  return config


@exp_factory.register_config_factory('groie_maskrcnn_shapes_mmdetection')
def groie_maskrcnn_shapes_mmdetection() -> groie_config.GRoIEExperimentConfig:
  """The main job's GRoIE Mask R-CNN in the mmdetection layout."""
  return _shapes_in_mmdetection_layout(with_groie=True)


@exp_factory.register_config_factory('maskrcnn_shapes_mmdetection')
def maskrcnn_shapes_mmdetection() -> groie_config.GRoIEExperimentConfig:
  """Its baseline: mmdetection's single-level RoI extractors."""
  return _shapes_in_mmdetection_layout(with_groie=False)


@exp_factory.register_config_factory('groie_gcnet_maskrcnn_shapes')
def groie_gcnet_maskrcnn_shapes() -> groie_config.GRoIEExperimentConfig:
  """GRoIE Mask R-CNN with GCNet's ResNet-18 on the built-in shapes set.

  ResNet-18's basic blocks have no conv3: the context block follows their
  second conv and its norm, the same place before the residual add.
  """
  return _with_gc_backbone(_shapes_experiment(with_groie=True))


@exp_factory.register_config_factory('gcnet_maskrcnn_shapes')
def gcnet_maskrcnn_shapes() -> groie_config.GRoIEExperimentConfig:
  """GC-Net's baseline on the shapes set: stock RoI aligners."""
  return _with_gc_backbone(_shapes_experiment(with_groie=False))


def _as_grid_rcnn(config: groie_config.GRoIEExperimentConfig,
                  with_groie: bool) -> grid_config.GridRCNNExperimentConfig:
  """`config`'s detector as Grid R-CNN: no masks, a classification-only box
  head (class-agnostic zero deltas), mmdetection's Grid test NMS (IoU 0.3,
  score 0.03), and the grid branch; GRoIE in the box and grid branches
  `with_groie`, else the stock aligners."""
  task = grid_config.GridRCNNTask()
  task.override(config.task.as_dict(), is_strict=False)
  model = task.model
  model.include_mask = False
  model.mask_groie = None
  model.detection_head.class_agnostic_bbox_pred = True
  model.detection_generator.nms_iou_threshold = 0.3
  model.detection_generator.pre_nms_score_threshold = 0.03
  if not with_groie:
    model.box_groie = None
    model.grid_groie = None
  task.losses.frcnn_box_weight = 0.0
  return grid_config.GridRCNNExperimentConfig(
      task=task, trainer=config.trainer, runtime=config.runtime,
      restrictions=config.restrictions)


def _grid_coco(with_groie: bool) -> grid_config.GridRCNNExperimentConfig:
  """Grid R-CNN Plus R50-FPN on COCO, as mmdetection's
  `grid_rcnn_r50_fpn_gn-head`: its RPN keeps 2000 proposals per image in
  training (Faster R-CNN's: 1000)."""
  config = _as_grid_rcnn(_from_model_garden('fasterrcnn_resnetfpn_coco'),
                         with_groie)
  config.task.model.roi_generator.num_proposals = 2000
  return config


@exp_factory.register_config_factory('groie_gridrcnn_resnetfpn_coco')
def groie_gridrcnn_resnetfpn_coco() -> grid_config.GridRCNNExperimentConfig:
  """Grid R-CNN Plus R50-FPN (GroupNorm head) with GRoIE as its box and grid
  extractors (paper, Table V)."""
  return _grid_coco(with_groie=True)


@exp_factory.register_config_factory('gridrcnn_resnetfpn_coco')
def gridrcnn_resnetfpn_coco() -> grid_config.GridRCNNExperimentConfig:
  """Grid R-CNN Plus R50-FPN with Model Garden's stock aligners."""
  return _grid_coco(with_groie=False)


def _grid_shapes(with_groie: bool) -> grid_config.GridRCNNExperimentConfig:
  """Grid R-CNN sized for the built-in set: a GridHead of 8 channels per
  point (mmdetection: 64) and 64 positives per replica (192), so that a
  step costs about what the Mask R-CNN shapes step costs."""
  config = _as_grid_rcnn(_shapes_experiment(with_groie), with_groie)
  config.task.model.grid_head.point_channels = 8
  config.task.model.max_num_grid = 64
  return config


@exp_factory.register_config_factory('groie_gridrcnn_shapes')
def groie_gridrcnn_shapes() -> grid_config.GridRCNNExperimentConfig:
  """Grid R-CNN with GRoIE (box and grid branches) on the built-in set."""
  return _grid_shapes(with_groie=True)


@exp_factory.register_config_factory('gridrcnn_shapes')
def gridrcnn_shapes() -> grid_config.GridRCNNExperimentConfig:
  """Its baseline twin: stock aligners."""
  return _grid_shapes(with_groie=False)
