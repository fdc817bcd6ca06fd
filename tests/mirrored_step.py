"""One training step under MirroredStrategy on two logical CPUs, and on one:
for the first image of a batch twice, and for two different images.

    python -m tests.mirrored_step SHAPES_DATA_JSON MODEL

MODEL: groie, baseline, gcnet_groie or grid_groie (Grid R-CNN with GRoIE,
every positive in its grid branch and no jitter, so that its loss is a
function of the batch).

Run in its own process by tests/test_training.py: logical devices must be
configured before TensorFlow initialises, which a pytest session has done
long before. Prints one JSON line: both strategies' losses (each of Model
Garden's training metrics), and the global norm of the weights' change and
of the difference between the two strategies' weights after the step.
"""

import json
import sys

import numpy as np
import tensorflow as tf
import tf_keras

# Sums of floats in a varying order (segment sums, all-reduces) move a step by
# float32 rounding from run to run; op determinism fixes the order so that
# the two strategies differ only by what they compute.
tf.config.experimental.enable_op_determinism()
# Op determinism requires seeded random ops. Keras's unseeded initializers
# draw their seeds from Python's `random`: without this, each run starts from
# other weights and sees other proposals.
tf_keras.utils.set_random_seed(0)
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

# pylint: disable=g-import-not-at-top
from official.core import task_factory

from groie_tf.data import shapes
from tests.tiny_experiment import tiny_experiment
from tests.tiny_experiment import tiny_grid_experiment


def one_step(task, config, strategy, initial_weights, batch):
  """The losses of one train step; the trainable weights before and after."""
  with strategy.scope():
    model = task.build_model()
    model.set_weights(initial_weights)
    before = [w.numpy() for w in model.trainable_weights]
    optimizer = task.create_optimizer(config.trainer.optimizer_config,
                                      config.runtime)
    metrics = task.build_metrics(training=True)
  inputs = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).unbatch().batch(2))

  @tf.function
  def step(features_and_labels):
    return strategy.run(task.train_step,
                        args=(features_and_labels, model, optimizer, metrics))

  step(next(iter(inputs)))
  losses = {m.name: float(m.result()) for m in metrics}
  return losses, before, [w.numpy() for w in model.trainable_weights]


def compare(config, batch, mirrored):
  """One step on one device and on `mirrored` from the same weights."""
  task = task_factory.get_task(config.task)
  initial = task.build_model().get_weights()
  single_loss, before, single = one_step(
      task, config, tf.distribute.OneDeviceStrategy('/cpu:0'), initial, batch)
  mirrored_loss, _, replicated = one_step(task, config, mirrored, initial,
                                          batch)
  norm = lambda arrays: float(np.sqrt(sum((a**2).sum() for a in arrays)))
  return {
      'replicas': mirrored.num_replicas_in_sync,
      'single_loss': single_loss, 'mirrored_loss': mirrored_loss,
      'weights_moved': norm([a - b for a, b in zip(single, before)]),
      'weight_difference': norm([a - b for a, b in zip(single, replicated)])}


def main():
  data = shapes.ShapesDataset(**json.loads(sys.argv[1]))
  model = sys.argv[2]
  if model == 'grid_groie':
    config = tiny_grid_experiment(data, groie=True, max_num_grid=256)
    config.task.model.jitter_amplitude = 0.0
  else:
    config = tiny_experiment(data, groie=model.endswith('groie'),
                             batch_size=2,
                             gc_backbone=model.startswith('gcnet'))
  task = task_factory.get_task(config.task)
  batch = next(iter(task.build_inputs(config.task.train_data)))
  images = batch[0].numpy()
  assert np.abs(images[0] - images[1]).max() > 0.5, 'the images are the same'
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  # The first image twice: with per-replica batch norm, each replica sees the
  # statistics of the whole batch, and so does every loss normaliser.
  first_twice = tf.nest.map_structure(lambda t: tf.concat([t[:1], t[:1]], 0),
                                      batch)
  report = {'same_image': compare(config, first_twice, mirrored)}
  # Two different images, one per replica; synchronised batch norm gives
  # each replica the whole batch's statistics, as on one device.
  config.task.model.norm_activation.use_sync_bn = True
  report['two_images'] = compare(config, batch, mirrored)
  print(json.dumps(report))


if __name__ == '__main__':
  main()
