"""Registered experiments (their names are the contract).

Each starts from Model Garden's registered experiment of the same detector,
so schedules, data and evaluation stay Model Garden's, and adds the GRoIE
blocks. Nothing is downloaded: `task.init_checkpoint` is cleared (Model
Garden points it at a cloud bucket); set it to a local backbone checkpoint
with `task.init_checkpoint_modules=backbone`.
"""

from official.core import exp_factory

from groie_tf.configs import groie_maskrcnn as groie_config


def _from_model_garden(name: str) -> groie_config.GRoIEExperimentConfig:
  """Model Garden's experiment `name` as a GRoIE experiment."""
  stock = exp_factory.get_exp_config(name)
  task = groie_config.GRoIEMaskRCNNTask()
  task.override(stock.task.as_dict(), is_strict=False)
  task.init_checkpoint = ''
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
