"""One training step under MirroredStrategy on two logical CPUs, and on one:
for the first image of a batch twice, and for two different images.

    python -m tests.mirrored_step SHAPES_DATA_JSON MODEL

MODEL: groie, baseline, gcnet_groie, mmdetection_groie (the mmdetection
layout) or grid_groie (Grid R-CNN with GRoIE, every positive in its grid
branch and no jitter, so that its loss is a function of the batch).

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


class OneStep:
  """One training step under `strategy`, from `initial_weights` every time.

  The step is traced once and replayed for every batch (the same shapes):
  before each, the weights go back to `initial_weights` and the optimizer's
  variables (SGD's iterations and momenta) to zero, which is a fresh
  optimizer's state.
  """

  def __init__(self, task, config, strategy, initial_weights):
    self.strategy, self.initial_weights = strategy, initial_weights
    with strategy.scope():
      self.model = task.build_model()
      self.optimizer = task.create_optimizer(
          config.trainer.optimizer_config, config.runtime)
      self.metrics = task.build_metrics(training=True)
    self.traces = 0

    @tf.function
    def step(features_and_labels):
      self.traces += 1
      return strategy.run(task.train_step, args=(
          features_and_labels, self.model, self.optimizer, self.metrics))

    self._step = step

  def __call__(self, batch):
    """The losses of one step on `batch`; the trainable weights before and
    after it."""
    self.model.set_weights(self.initial_weights)
    for variable in self.optimizer.variables():
      variable.assign(tf.zeros_like(variable))
    for metric in self.metrics:
      metric.reset_states()
    before = [w.numpy() for w in self.model.trainable_weights]
    inputs = self.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).unbatch().batch(2))
    self._step(next(iter(inputs)))
    losses = {m.name: float(m.result()) for m in self.metrics}
    return losses, before, [w.numpy() for w in self.model.trainable_weights]


def compare(config, batches, mirrored):
  """For each of `batches`: one step on one device and on `mirrored`, both
  from the same weights."""
  task = task_factory.get_task(config.task)
  initial = task.build_model().get_weights()
  single_step = OneStep(task, config,
                        tf.distribute.OneDeviceStrategy('/cpu:0'), initial)
  mirrored_step = OneStep(task, config, mirrored, initial)
  norm = lambda arrays: float(np.sqrt(sum((a**2).sum() for a in arrays)))
  report, traces = {}, []
  for name, batch in batches.items():
    single_loss, before, single = single_step(batch)
    mirrored_loss, _, replicated = mirrored_step(batch)
    report[name] = {
        'replicas': mirrored.num_replicas_in_sync,
        'single_loss': single_loss, 'mirrored_loss': mirrored_loss,
        'weights_moved': norm([a - b for a, b in zip(single, before)]),
        'weight_difference': norm([a - b for a, b in zip(single,
                                                         replicated)])}
    traces.append((single_step.traces, mirrored_step.traces))
  # Only the first batch traced (twice, as a tf.function that creates
  # variables, here the optimizer's slots, does); the others replayed it.
  assert traces[1:] == traces[:1] * (len(traces) - 1), traces
  return report


def main():
  data = shapes.ShapesDataset(**json.loads(sys.argv[1]))
  model = sys.argv[2]
  if model == 'grid_groie':
    config = tiny_grid_experiment(data, groie=True, max_num_grid=256)
    config.task.model.jitter_amplitude = 0.0
  else:
    config = tiny_experiment(data, groie=model.endswith('groie'),
                             batch_size=2,
                             gc_backbone=model.startswith('gcnet'),
                             mmdetection=model.startswith('mmdetection'))
  task = task_factory.get_task(config.task)
  batch = next(iter(task.build_inputs(config.task.train_data)))
  images = batch[0].numpy()
  assert np.abs(images[0] - images[1]).max() > 0.5, 'the images are the same'
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  # Synchronised batch norm gives each replica the whole batch's statistics,
  # as on one device: for two different images, one per replica, and
  # trivially for the first image twice (each replica's own statistics are
  # then the batch's).
  config.task.model.norm_activation.use_sync_bn = True
  first_twice = tf.nest.map_structure(lambda t: tf.concat([t[:1], t[:1]], 0),
                                      batch)
  print(json.dumps(compare(config, {'same_image': first_twice,
                                    'two_images': batch}, mirrored)))


if __name__ == '__main__':
  main()
