"""mmdetection's frozen_stages and norm_eval on Model Garden's ResNet."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import resnet

from groie_tf.modeling import backbone_freezing
from tests.frozen_weights import changed_weights
from tests.frozen_weights import variables_by_stage

# ResNet blocks per stage (Model Garden's RESNET_SPECS).
BLOCKS = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}


def _small_resnet(model_id, size=64):
  return resnet.ResNet(model_id=model_id, depth_multiplier=0.25,
                       input_specs=tf_keras.layers.InputSpec(
                           shape=[None, size, size, 3]))


@pytest.mark.parametrize('model_id', sorted(BLOCKS))
def test_resnet_stages_are_the_stem_and_four_block_groups(model_id):
  stages = backbone_freezing.resnet_stages(_small_resnet(model_id))
  stem = [type(layer).__name__ for layer in stages[0]]
  assert stem == ['InputLayer', 'Conv2D', 'BatchNormalization', 'Activation',
                  'MaxPooling2D']
  for level, (stage, blocks) in enumerate(zip(stages[1:], BLOCKS[model_id]),
                                          start=2):
    assert len(stage) == blocks + 1  # the blocks and the closing identity
    assert stage[-1].name == f'block_group_l{level}'


def _one_sgd_step(backbone, images, variables):
  with tf.GradientTape() as tape:
    outputs = backbone(images, training=True)
    loss = tf.add_n([tf.reduce_mean(tf.square(o - 1.0))
                     for o in outputs.values()])
  for variable, gradient in zip(variables, tape.gradient(loss, variables)):
    variable.assign_sub(0.1 * gradient)


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 4])
@pytest.mark.parametrize('norm_eval', [False, True])
def test_frozen_stages_and_statistics_stay_put_through_a_training_step(
    frozen_stages, norm_eval):
  tf_keras.utils.set_random_seed(0)
  backbone = _small_resnet(18)
  backbone_freezing.freeze_stages(backbone, frozen_stages)
  if norm_eval:
    assert backbone_freezing.freeze_norm_statistics(backbone) == 1 + 2 * 8 + 4  # stem, blocks, shortcuts
  by_stage = variables_by_stage(backbone)
  before = {i: [v.numpy().copy() for v in vs] for i, vs in by_stage.items()}
  images = tf.random.stateless_uniform([2, 64, 64, 3], [1, 2])
  _one_sgd_step(backbone, images, backbone.trainable_variables)
  for stage, variables in by_stage.items():
    changed = dict(zip([v.name for v in variables],
                       changed_weights(before[stage], variables)))
    statistics = [c for n, c in changed.items() if 'moving' in n]
    learned = [c for n, c in changed.items() if 'moving' not in n]
    if stage <= frozen_stages:
      assert not any(changed.values()), f'frozen stage {stage} changed'
    else:
      assert all(learned), f'stage {stage}: a weight did not train'
      if norm_eval:
        assert not any(statistics), f'stage {stage}: statistics moved'
      else:  # they follow the batch: the guard that a change is seen
        assert all(statistics), f'stage {stage}: statistics did not move'


def test_norm_eval_normalises_with_the_moving_statistics():
  """In training mode too: the output equals the inference-mode output."""
  tf_keras.utils.set_random_seed(0)
  backbone = _small_resnet(18)
  images = tf.random.stateless_uniform([2, 64, 64, 3], [3, 4])
  training = backbone(images, training=True)['5'].numpy()
  inference = backbone(images, training=False)['5'].numpy()
  assert np.abs(training - inference).max() > 1e-3  # batch stats differ
  backbone_freezing.freeze_norm_statistics(backbone)
  np.testing.assert_allclose(backbone(images, training=True)['5'].numpy(),
                             inference, rtol=1e-5, atol=1e-6)


def test_frozen_stages_needs_a_resnet():
  with pytest.raises(ValueError, match='frozen_stages needs the ResNet'):
    backbone_freezing.freeze_stages(tf_keras.Sequential([]), 1)
  with pytest.raises(ValueError, match=r'frozen_stages must be in -1..4'):
    backbone_freezing.freeze_stages(_small_resnet(18), 5)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
