"""The paper configs build mmdetection's detector through the task: the
2-FC box head, the frozen stem and stage 1, frozen batch-norm statistics."""

import pathlib

import pytest
import tf_keras
from official.core import task_factory

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading
from groie_tf.layers import GeneralizedAttention
from groie_tf.layers import GRoIE
from groie_tf.layers import GridHead
from groie_tf.modeling import backbone_freezing
from groie_tf.modeling import gc_checkpoint
from groie_tf.modeling import gc_resnet
from groie_tf.modeling import grid_rcnn_model
from groie_tf.modeling.mmdetection_layout import fpn as mmdet_fpn
from tests.frozen_weights import changed_weights
from tests.frozen_weights import variables_by_stage
from tests.tiny_experiment import tiny_experiment

# Builds COCO-headed models and trains a step: minutes on 2 CPU cores.
pytestmark = pytest.mark.slow

PAPER_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'paper'


def _paper_row(experiment, row):
  """`train.py --experiment=<experiment>
  --config_file=configs/paper/base_1x_8gpu.yaml
  --config_file=configs/paper/<row>.yaml`'s config."""
  return loading.load_experiment(experiment, [
      str(PAPER_DIR / 'base_1x_8gpu.yaml'), str(PAPER_DIR / f'{row}.yaml')])


def _paper_model():
  """The Table V GRoIE row's model through the task, at a CPU size: smaller
  input and backbone, the same heads (256-channel FPN, 91 classes)."""
  config = _paper_row('groie_maskrcnn_resnetfpn_coco',
                      'table5_mask_rcnn_groie')
  config.override({'task': {'model': {
      'input_size': [128, 128, 3],
      'backbone': {'resnet': {'model_id': 18, 'depth_multiplier': 0.25}}}}})
  task = task_factory.get_task(config.task)
  return config.task.model, task.build_model()


def test_the_paper_configs_build_the_two_fc_head_and_freeze_the_backbone():
  config, model = _paper_model()
  head = model.detection_head[0] if isinstance(
      model.detection_head, list) else model.detection_head
  dense = [l for l in head.submodules if isinstance(l, tf_keras.layers.Dense)]
  convs = [l for l in head.submodules if isinstance(l, tf_keras.layers.Conv2D)]
  assert convs == []
  assert sorted(l.units for l in dense) == [91, 91 * 4, 1024, 1024]
  # FC 7*7*256 -> 1024 -> 1024, each followed by Model Garden's batch norm
  # (4 x 1024: mmdetection's head has none), then classes and boxes.
  fcs = (7 * 7 * 256 + 1) * 1024 + (1024 + 1) * 1024
  norms = 2 * 4 * 1024
  outputs = (1024 + 1) * 91 + (1024 + 1) * 91 * 4
  assert head.count_params() == fcs + norms + outputs
  assert (config.frozen_stages, config.norm_eval) == (1, True)
  stages = backbone_freezing.resnet_stages(model.backbone)
  frozen = {id(v) for stage in stages[:2] for l in stage for v in l.weights}
  assert frozen and not frozen & {id(v) for v in model.trainable_variables}
  assert all(not layer.trainable for stage in stages[:2] for layer in stage)
  assert all(layer.trainable for stage in stages[2:] for layer in stage)



def test_the_gcnet_row_builds_gcnet_with_the_authors_attention_heads():
  """`train.py --experiment=groie_gcnet_maskrcnn_resnetfpn_coco
  --config_file=configs/paper/base_1x_8gpu.yaml
  --config_file=configs/paper/table5_gcnet_groie.yaml`'s model, at a CPU
  size (R50 at a quarter width, 128 px): 13 context blocks in c3-c5, stem
  and c2 frozen, batch norms training elsewhere, 8 attention heads in the
  box extractor and 6 in the mask extractor."""
  config = _paper_row('groie_gcnet_maskrcnn_resnetfpn_coco',
                      'table5_gcnet_groie')
  config.override({'task': {'model': {
      'input_size': [128, 128, 3],
      'backbone': {'gc_resnet': {'depth_multiplier': 0.25}}}}})
  model = task_factory.get_task(config.task).build_model()
  assert isinstance(model.backbone, gc_resnet.GCResNet)
  assert len(gc_checkpoint.context_blocks(model.backbone)) == 13
  stages = backbone_freezing.resnet_stages(model.backbone)
  assert all(not layer.trainable for stage in stages[:2] for layer in stage)
  trainable = {id(v) for v in model.trainable_variables}
  for block in gc_checkpoint.context_blocks(model.backbone):
    assert all(id(v) in trainable for v in block.weights)
  assert config.task.model.norm_eval is False
  assert config.task.model.norm_activation.use_sync_bn
  heads = {name: [m.num_heads for m in aligner.submodules
                  if isinstance(m, GeneralizedAttention)]
           for name, aligner in (('box', model.roi_aligner),
                                 ('mask', model.mask_roi_aligner))}
  assert heads == {'box': [8], 'mask': [6]}  # one post-processing block


def test_the_gcnet_r101_row_builds_in_the_mmdetection_layout():
  """The largest row (GC-Net R101 + GRoIE) with
  configs/paper/mmdetection_layout.yaml, at full width: 30 context blocks,
  every strided block and the stem padded as PyTorch pads, mmdetection's
  FPN and heads (no batch norm outside the backbone)."""
  config = loading.load_experiment('groie_gcnet_maskrcnn_resnetfpn_coco', [
      str(PAPER_DIR / 'base_1x_8gpu.yaml'),
      str(PAPER_DIR / 'table5_gcnet_r101_groie.yaml'),
      str(PAPER_DIR / 'mmdetection_layout.yaml')])
  model = task_factory.get_task(config.task).build_model()
  assert len(gc_checkpoint.context_blocks(model.backbone)) == 30
  assert model.backbone.get_config()['pytorch_padding']
  assert type(model.decoder) is mmdet_fpn.FPN  # pylint: disable=unidiomatic-typecheck
  norms = [v.name for v in model.variables if 'moving_mean' in v.name]
  backbone_norms = [v for v in model.backbone.variables
                    if 'moving_mean' in v.name]
  assert len(norms) == len(backbone_norms) == 104  # R101: 104 BN layers


@pytest.mark.parametrize('row', ['baseline', 'groie'])
def test_the_grid_rows_build_grid_rcnn_with_mmdetections_head(row):
  """`train.py --experiment=[groie_]gridrcnn_resnetfpn_coco
  --config_file=configs/paper/base_1x_8gpu.yaml
  --config_file=configs/paper/table5_grid_rcnn_<row>.yaml`'s model at a
  CPU size (R50 at a quarter width, 128 px; the FPN keeps its 256
  channels): Grid R-CNN with mmdetection's GridHead, 23,123,145 weights,
  and GRoIE blocks as both extractors (FPN's rule without modules in the
  baseline, the paper's block in the GRoIE row)."""
  name = {'baseline': 'gridrcnn_resnetfpn_coco',
          'groie': 'groie_gridrcnn_resnetfpn_coco'}[row]
  config = _paper_row(name, f'table5_grid_rcnn_{row}')
  config.override({'task': {'model': {
      'input_size': [128, 128, 3],
      'backbone': {'resnet': {'depth_multiplier': 0.25}}}}})
  model = task_factory.get_task(config.task).build_model()
  assert isinstance(model, grid_rcnn_model.GridRCNNModel)
  assert model.mask_head is None
  assert isinstance(model.grid_head, GridHead)
  assert model.grid_head.count_params() == 23_123_145
  for aligner, crop in ((model.roi_aligner, 7), (model.grid_roi_aligner, 14)):
    assert isinstance(aligner, GRoIE)
    assert aligner.crop_size == crop
    expected = ('heuristic', 'none') if row == 'baseline' else ('all',
                                                                'conv5x5')
    assert (aligner.level_selection, aligner.pre_processing) == expected


def test_the_task_keeps_frozen_weights_and_statistics_through_a_step(
    tiny_shapes):
  """Model Garden's own train_step, on the task's model and optimizer."""
  config = tiny_experiment(tiny_shapes)
  config.override({'task': {'model': {'frozen_stages': 1, 'norm_eval': True}}})
  task = task_factory.get_task(config.task)
  model = task.build_model()
  optimizer = task.create_optimizer(config.trainer.optimizer_config,
                                    config.runtime)
  by_stage = variables_by_stage(model.backbone)
  before = {i: [v.numpy().copy() for v in vs] for i, vs in by_stage.items()}
  batch = next(iter(task.build_inputs(config.task.train_data)))
  task.train_step(batch, model, optimizer)
  for stage, variables in by_stage.items():
    changed = dict(zip([v.name for v in variables],
                       changed_weights(before[stage], variables)))
    if stage <= 1:
      assert not any(changed.values()), f'frozen stage {stage} changed'
    else:
      assert not any(c for n, c in changed.items() if 'moving' in n)
      assert any(c for n, c in changed.items() if 'kernel' in n)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
