"""One training step under MirroredStrategy on two logical CPUs, and on one.

    python -m tests.mirrored_step SHAPES_DATA_JSON [groie|baseline]

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

# TF's CPU gradient of CropAndResize (the RoIAlign of GRoIE and of the
# stock aligner) sums in a varying order unless op determinism is on: 0.2-0.5%
# of a step between two identical runs, which would hide real differences.
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


def main():
  data = shapes.ShapesDataset(**json.loads(sys.argv[1]))
  config = tiny_experiment(data, groie=sys.argv[2] == 'groie', batch_size=1)
  task = task_factory.get_task(config.task)
  features, labels = next(iter(task.build_inputs(config.task.train_data)))
  # The same image twice: with per-replica batch norm, two replicas of one
  # image each see the statistics of the whole batch.
  batch = tf.nest.map_structure(lambda t: tf.concat([t, t], 0),
                                (features, labels))
  initial = task.build_model().get_weights()
  single_loss, before, single = one_step(
      task, config, tf.distribute.OneDeviceStrategy('/cpu:0'), initial, batch)
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  mirrored_loss, _, replicated = one_step(task, config, mirrored, initial,
                                          batch)
  norm = lambda arrays: float(np.sqrt(sum((a**2).sum() for a in arrays)))
  print(json.dumps({
      'replicas': mirrored.num_replicas_in_sync,
      'single_loss': single_loss, 'mirrored_loss': mirrored_loss,
      'weights_moved': norm([a - b for a, b in zip(single, before)]),
      'weight_difference': norm([a - b for a, b in zip(single, replicated)])}))


if __name__ == '__main__':
  main()
