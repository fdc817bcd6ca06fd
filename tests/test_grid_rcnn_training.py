"""Grid R-CNN trained and evaluated through Model Garden's task (tiny)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import task_factory

from groie_tf.layers import GRoIE
from groie_tf.ops import grid_points
from tests.tiny_experiment import tiny_grid_experiment

# Trains models: minutes (`pytest -m "not slow"` skips them).
pytestmark = pytest.mark.slow


def _losses(task, model, batch):
  images, labels = batch
  outputs = model(images, image_shape=labels['image_info'][:, 1, :],
                  anchor_boxes=labels['anchor_boxes'],
                  gt_boxes=labels['gt_boxes'], gt_classes=labels['gt_classes'],
                  training=True)
  return outputs, {k: float(v) for k, v in task.build_losses(
      outputs, labels, model.losses).items()}


@pytest.mark.parametrize('groie,mmdetection', [(True, False), (False, False),
                                               (False, True)])
def test_training_steps_train_the_grid_branch(tiny_shapes, groie,
                                              mmdetection):
  # Every positive of the batch (at most 2 x 64) and no jitter: the grid
  # loss is then the same function of the weights at every call (the picks'
  # order is random, their mean is not).
  config = tiny_grid_experiment(tiny_shapes, groie=groie, max_num_grid=256,
                                mmdetection=mmdetection)
  config.task.model.jitter_amplitude = 0.0
  task = task_factory.get_task(config.task)
  model = task.build_model()
  # The mmdetection layout's baseline grid extractor is GRoIE's
  # single-level form (mmdetection's SingleRoIExtractor), without weights.
  assert isinstance(model.grid_roi_aligner, GRoIE) == (groie or mmdetection)
  assert bool(model.grid_roi_aligner.trainable_weights) == groie
  assert 'grid_loss' in [m.name for m in task.build_metrics(training=True)]
  batch = next(iter(task.build_inputs(config.task.train_data)))
  outputs, before = _losses(task, model, batch)
  # The box head only classifies; the grid loss is in the total.
  assert not np.any(outputs['box_outputs'].numpy())
  assert outputs['grid_valid'].numpy().sum() > 0
  assert before['grid_loss'] > 0 and np.isfinite(before['grid_loss'])
  assert before['frcnn_box_loss'] * config.task.losses.frcnn_box_weight == 0
  grid_weights = [w.numpy() for w in model.grid_head.trainable_weights +
                  model.grid_roi_aligner.trainable_weights]
  optimizer = tf_keras.optimizers.SGD(0.01)
  step = tf.function(lambda b: task.train_step(b, model, optimizer))
  for _ in range(5):
    step(batch)
  _, after = _losses(task, model, batch)
  assert after['grid_loss'] < before['grid_loss']
  # mmdetection's heads start from Normal(0, 0.01) and Normal(0.001)
  # weights (Model Garden's: variance scaling), so its losses move less
  # (0.91 of the loss after 5 steps, measured).
  assert after['total_loss'] < (0.95 if mmdetection else 0.9) * (
      before['total_loss']), (before, after)
  trained = model.grid_head.trainable_weights + (
      model.grid_roi_aligner.trainable_weights)
  moved = [np.abs(new.numpy() - old).max() > 0
           for old, new in zip(grid_weights, trained)]
  assert sum(moved) >= 0.9 * len(moved), (sum(moved), len(moved))


def test_inference_replaces_the_detections_by_the_grid_vote(tiny_shapes):
  config = tiny_grid_experiment(tiny_shapes)
  task = task_factory.get_task(config.task)
  model = task.build_model()
  images, labels = next(iter(task.build_inputs(config.task.validation_data)))
  outputs = model(images, image_shape=labels['image_info'][:, 1, :],
                  anchor_boxes=labels['anchor_boxes'], training=False)
  before = outputs['detection_boxes_before_grid']
  pooled = model.grid_roi_aligner(outputs['decoder_features'], before)
  count = int(tf.size(before)) // 4
  logits = model.grid_head(tf.reshape(pooled, [count, 14, 14, -1]),
                           training=False)['fused']
  want = tf.reshape(grid_points.decode_boxes(
      logits, tf.reshape(before, [-1, 4])), tf.shape(before)).numpy()
  got = outputs['detection_boxes'].numpy()
  detections = outputs['num_detections'].numpy()
  assert detections.max() > 0
  for image, count in enumerate(detections):
    np.testing.assert_allclose(got[image, :count], want[image, :count],
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(got[image, count:],
                                  before.numpy()[image, count:])
  assert np.abs(got - before.numpy()).max() > 0.1


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
