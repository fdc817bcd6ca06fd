"""The tiny GRoIE experiment's losses at initialisation and after one SGD step.

    python -m tests.seeded_step SHAPES_DATA_JSON

Run in its own process by tests/test_training.py, once with each of
TensorFlow's CPU kernel libraries: TensorFlow chooses between oneDNN's and
Eigen's kernels once, when it starts (`groie_tf.training.cpu_kernels`), so
a pytest session cannot switch. Prints one JSON line: the library that ran
(`cpu_kernels`) and Model Garden's losses `initial` and `after_one_step`.
"""

import json
import sys

import numpy as np
import tf_keras
from official.core import task_factory

from groie_tf import training
from groie_tf.data import shapes
from tests.tiny_experiment import tiny_experiment


def model_losses(task, model, batch):
  """Model Garden's training losses of `model` on `batch`, as floats."""
  images, labels = batch
  outputs = model(images, image_shape=labels['image_info'][:, 1, :],
                  anchor_boxes=labels['anchor_boxes'],
                  gt_boxes=labels['gt_boxes'], gt_classes=labels['gt_classes'],
                  gt_masks=labels['gt_masks'], training=True)
  losses = task.build_losses(outputs, labels, model.losses)
  return {k: float(v) for k, v in losses.items()}


def main():
  config = tiny_experiment(shapes.ShapesDataset(**json.loads(sys.argv[1])))
  # task.seed fixes the weights; `deterministic_input` draws the flips and
  # anchor samples in image order (in thread order, the batch changed 3
  # times in 9).
  assert config.task.seed == 0 and config.task.deterministic_input
  task = task_factory.get_task(config.task)
  model = task.build_model()
  batch = next(iter(task.build_inputs(config.task.train_data)))
  images = batch[0].numpy()
  assert images.shape[0] == 2, images.shape
  assert np.abs(images[0] - images[1]).max() > 0.5, 'the images are the same'
  report = {'cpu_kernels': training.cpu_kernels(),
            'initial': model_losses(task, model, batch)}
  task.train_step(batch, model, tf_keras.optimizers.SGD(0.01))
  report['after_one_step'] = model_losses(task, model, batch)
  print(json.dumps(report))


if __name__ == '__main__':
  main()
