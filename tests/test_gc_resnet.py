"""GCNet's ResNet: where the context blocks sit, what they add, and how a
plain ResNet checkpoint starts it."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import task_factory
from official.vision.modeling.backbones import resnet
from official.vision.modeling.layers import nn_blocks

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading
from groie_tf.modeling import backbone_freezing
from groie_tf.modeling import gc_checkpoint
from groie_tf.modeling import gc_resnet
from tests import layer_contract
from tests.tiny_experiment import tiny_experiment

_ANY_SIZE = tf_keras.layers.InputSpec(shape=[None, None, None, 3])


def _randomize_batch_norms(model, seed):
  """Random statistics and affines, so that a mis-paired copy shows."""
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    kind = variable.name.split('/')[-1].split(':')[0]
    if kind in ('moving_variance', 'gamma'):
      variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    elif kind in ('moving_mean', 'beta'):
      variable.assign(rng.normal(0.0, 0.2, variable.shape))


@pytest.mark.parametrize('model_id,blocks,parameters', [
    (50, 13, 10_000_909), (101, 30, 18_961_694)])
def test_r4_c3_c5_blocks_and_parameters(model_id, blocks, parameters):
  """mmdetection's `r4_gcb_c3-c5`: a block in every bottleneck of c3-c5."""
  spec = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
  gc = gc_resnet.GCResNet(model_id=model_id, input_specs=spec)
  plain = resnet.ResNet(model_id=model_id, input_specs=spec)
  assert gc.count_params() - plain.count_params() == parameters
  stages = backbone_freezing.resnet_stages(gc)
  per_stage = [sum(isinstance(l, gc_resnet.GCBottleneckBlock) for l in stage)
               for stage in stages]
  plain_blocks = [sum(isinstance(l, nn_blocks.BottleneckBlock) for l in stage)
                  for stage in stages]
  assert per_stage[:2] == [0, 0]  # stem and c2
  assert per_stage[2:] == plain_blocks[2:] and sum(per_stage) == blocks


def test_levels_choose_the_stages():
  backbone = gc_resnet.GCResNet(model_id=18, depth_multiplier=0.25,
                                gc_levels=[2, 4], input_specs=_ANY_SIZE)
  per_stage = [sum(isinstance(l, gc_resnet.GCResidualBlock) for l in stage)
               for stage in backbone_freezing.resnet_stages(backbone)]
  assert per_stage == [0, 2, 0, 2, 0]


def _block_pair(block_class, filters, seed):
  """A GC block and Model Garden's plain block with the same weights."""
  kwargs = dict(filters=filters, strides=2, use_projection=True)
  gc = gc_resnet.GCBottleneckBlock if block_class is nn_blocks.BottleneckBlock \
      else gc_resnet.GCResidualBlock
  gc_block, plain = gc(gc_ratio=1 / 2, **kwargs), block_class(**kwargs)
  x = tf.random.stateless_normal([2, 6, 10, 16], [seed, 0])
  gc_block(x), plain(x)
  _randomize_batch_norms(plain, seed)
  context = {id(v) for v in gc_block.context_block.weights}
  own = [v for v in gc_block.weights if id(v) not in context]
  assert [v.shape for v in own] == [v.shape for v in plain.weights]
  for target, source in zip(own, plain.weights):
    target.assign(source)
  return gc_block, plain, x


@pytest.mark.parametrize('block_class,last_norm', [
    (nn_blocks.BottleneckBlock, '_norm3'), (nn_blocks.ResidualBlock, '_norm2')])
def test_the_context_block_sits_after_the_last_norm_before_the_add(
    block_class, last_norm):
  """A context block that adds a constant c per channel (its last conv's
  bias, kernel zero) computes what the plain block computes with c added to
  its last norm's offset: after the last conv and norm, before the residual
  add and the final ReLU. Adding c after the ReLU would differ."""
  gc_block, plain, x = _block_pair(block_class, filters=8, seed=1)
  channels = gc_block.context_block.transforms['channel_add'].conv2.bias.shape
  c = np.random.default_rng(2).normal(0.0, 1.0, channels).astype(np.float32)
  gc_block.context_block.transforms['channel_add'].conv2.bias.assign(c)
  got = gc_block(x).numpy()
  after_relu = plain(x).numpy() + c
  getattr(plain, last_norm).beta.assign_add(c)
  np.testing.assert_allclose(got, plain(x).numpy(), rtol=1e-5, atol=1e-5)
  assert np.abs(got - after_relu).max() > 0.1


def _plain_checkpoint(tmp_path, model_id=50, seed=3):
  plain = resnet.ResNet(model_id=model_id, depth_multiplier=0.25,
                        input_specs=_ANY_SIZE)
  _randomize_batch_norms(plain, seed)
  return plain, tf.train.Checkpoint(backbone=plain).write(
      str(tmp_path / 'plain' / 'ckpt'))


def test_a_plain_checkpoint_restores_every_other_variable(tmp_path, caplog):
  """Every non-GC variable equals the plain ResNet's; the context blocks
  keep their zero init, so the outputs equal the plain ResNet's, bit for
  bit."""
  plain, path = _plain_checkpoint(tmp_path)
  gc = gc_resnet.GCResNet(model_id=50, depth_multiplier=0.25,
                          input_specs=_ANY_SIZE)
  blocks = gc_checkpoint.context_blocks(gc)
  assert len(blocks) == 13
  gc_before = [v.numpy() for b in blocks for v in b.weights]
  # Model Garden's own restore refuses it (the context blocks are missing).
  with pytest.raises(AssertionError, match='not bound to checkpointed'):
    tf.train.Checkpoint(backbone=gc).read(
        path).expect_partial().assert_existing_objects_matched()
  # absl's logger, by name: an earlier test may have set its level, and
  # absl's INFO (0) is not the standard library's.
  with caplog.at_level('INFO', logger='absl'):
    gc_checkpoint.restore_backbone(gc, path)
  assert '13 context blocks (104 variables)' in caplog.text
  context = {id(v) for b in blocks for v in b.weights}
  own = [v for v in gc.weights if id(v) not in context]
  assert len(own) == len(plain.weights)
  for target, source in zip(own, plain.weights):
    np.testing.assert_array_equal(target.numpy(), source.numpy())
  for before, variable in zip(gc_before, [v for b in blocks
                                          for v in b.weights]):
    np.testing.assert_array_equal(variable.numpy(), before)
  x = tf.random.stateless_normal([2, 96, 64, 3], [4, 0])
  got, want = gc(x), plain(x)
  for level in want:
    np.testing.assert_array_equal(got[level].numpy(), want[level].numpy())


def test_a_gc_checkpoint_restores_the_context_blocks_too(tmp_path):
  saved = gc_resnet.GCResNet(model_id=18, depth_multiplier=0.25,
                             input_specs=_ANY_SIZE)
  for block in gc_checkpoint.context_blocks(saved):
    layer_contract.randomize_weights(block, seed=5)
  path = tf.train.Checkpoint(backbone=saved).write(str(tmp_path / 'gc'))
  fresh = gc_resnet.GCResNet(model_id=18, depth_multiplier=0.25,
                             input_specs=_ANY_SIZE)
  gc_checkpoint.restore_backbone(fresh, path)
  x = tf.random.stateless_normal([1, 64, 64, 3], [6, 0])
  for level, value in saved(x).items():
    np.testing.assert_array_equal(fresh(x)[level].numpy(), value.numpy())


def test_a_checkpoint_of_another_depth_is_refused(tmp_path):
  _, path = _plain_checkpoint(tmp_path, model_id=18)
  gc = gc_resnet.GCResNet(model_id=50, depth_multiplier=0.25,
                          input_specs=_ANY_SIZE)
  # TensorFlow names the first variable whose shape differs.
  with pytest.raises(ValueError, match='incompatible tensor with shape'):
    gc_checkpoint.restore_backbone(gc, path)


def test_the_task_starts_a_gc_backbone_from_a_plain_checkpoint(tiny_shapes,
                                                               tmp_path):
  """`task.init_checkpoint` with `init_checkpoint_modules: backbone`."""
  plain_config = tiny_experiment(tiny_shapes, groie=False)
  plain_model = task_factory.get_task(plain_config.task).build_model()
  _randomize_batch_norms(plain_model.backbone, seed=7)
  path = tf.train.Checkpoint(backbone=plain_model.backbone).write(
      str(tmp_path / 'backbone'))
  config = tiny_experiment(tiny_shapes, gc_backbone=True)
  config.task.init_checkpoint = path
  config.task.init_checkpoint_modules = 'backbone'
  task = task_factory.get_task(config.task)
  model = task.build_model()
  assert isinstance(model.backbone, gc_resnet.GCResNet)
  task.initialize(model)
  x = tf.random.stateless_normal([1, 128, 128, 3], [8, 0])
  want = plain_model.backbone(x)
  for level, value in model.backbone(x).items():
    np.testing.assert_array_equal(value.numpy(), want[level].numpy())


def test_config_round_trip():
  backbone = gc_resnet.GCResNet(model_id=18, depth_multiplier=0.25,
                                gc_levels=(4, 5), gc_ratio=1 / 2,
                                gc_pooling='avg',
                                gc_fusion=('channel_mul', 'channel_add'),
                                input_specs=_ANY_SIZE)
  config = backbone.get_config()
  assert (config['gc_levels'], config['gc_ratio'], config['gc_pooling'],
          config['gc_fusion']) == ([4, 5], 0.5, 'avg',
                                   ['channel_mul', 'channel_add'])
  clone = gc_resnet.GCResNet.from_config(config)
  assert clone.get_config() == config
  assert clone.count_params() == backbone.count_params()
  block = next(l for l in clone.layers
               if isinstance(l, gc_resnet.GCResidualBlock))
  assert block.context_block.pooling_type == 'avg'
  rebuilt = gc_resnet.GCResidualBlock.from_config(block.get_config())
  assert rebuilt.get_config() == block.get_config()


def test_the_experiment_config_selects_it_with_one_field():
  config = loading.load_experiment('groie_maskrcnn_resnetfpn_coco', [])
  config.override({'task': {'model': {'backbone': {'type': 'gc_resnet'}}}})
  config.validate()
  assert config.task.model.backbone.get().gc_levels == [3, 4, 5]
  assert config.task.model.backbone.get().model_id == 50
  restored = loading.load_experiment(
      'groie_gcnet_maskrcnn_resnetfpn_coco', [])
  assert restored.task.model.backbone.as_dict() == (
      config.task.model.backbone.as_dict())


@pytest.mark.parametrize('field,value,message', [
    ('gc_levels', [1, 3], r'gc_resnet\.gc_levels must be distinct levels'),
    ('gc_levels', [3, 3], r'gc_resnet\.gc_levels must be distinct levels'),
    ('gc_ratio', 0.0, r'gc_resnet: ratio must be in'),
    ('gc_pooling', 'max', r"gc_resnet: pooling_type must be one of.*'max'"),
    ('gc_fusion', ['add'], r"gc_resnet: fusion_types .*'add'"),
    ('se_ratio', 0.25, r'gc_resnet\.se_ratio: a block takes a context'),
])
def test_bad_gc_options_name_their_field(field, value, message):
  config = loading.load_experiment(
      'groie_gcnet_maskrcnn_resnetfpn_coco', [])
  config.task.model.backbone.gc_resnet.override({field: value})
  with pytest.raises(ValueError, match=r'task\.model\.backbone\.' + message):
    config.validate()


def test_the_layer_refuses_what_the_config_refuses():
  with pytest.raises(ValueError, match='gc_levels must be distinct'):
    gc_resnet.GCResNet(model_id=18, gc_levels=[6])
  with pytest.raises(ValueError, match='not both'):
    gc_resnet.GCResNet(model_id=18, se_ratio=0.25)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
