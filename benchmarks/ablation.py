"""What each row of the built-in set's ablation costs per training step.

Each variant of `groie_tf/ablation/variants.py` is a fresh model of the
README's main job (its input size, `--e2e_image_size` on a GPU), running
Model Garden's `task.train_step` on one fixed batch of `--e2e_batch_size`
images. `ratio` is against the `stock` row timed in the same rounds: the
cost of each variant, clean of whatever else the machine runs, which the
sweep's own training times are not. float32 without XLA, as the sweep
trains.
"""

from official.core import task_factory
import tensorflow as tf

from groie_tf.ablation import report
from groie_tf.ablation import variants
from groie_tf.data import shapes


def _train_step(variant, data, batch_size):
  config = variant.experiment_config()
  size = data.image_size
  config.override({'task': {
      'shapes_data': data.as_dict(),
      'model': {'input_size': [size, size, 3]},
      'train_data': {'global_batch_size': batch_size}}}, is_strict=True)
  config.validate()
  task = task_factory.get_task(config.task)
  model = task.build_model()
  optimizer = task.create_optimizer(config.trainer.optimizer_config,
                                    config.runtime)
  batch = next(iter(task.build_inputs(config.task.train_data)))
  return tf.function(lambda: task.train_step(batch, model, optimizer))


def run(setup, precision):
  if precision != 'float32':
    return []
  data = shapes.ShapesDataset(
      root=setup.work_dir, num_train_images=2 * setup.e2e_batch_size,
      num_val_images=1, image_size=setup.e2e_image_size, seed=0)
  shapes.ensure_dataset(data)
  steps = {v.name: _train_step(v, data, setup.e2e_batch_size)
           for v in variants.VARIANTS}
  timed = setup.time(steps)
  baseline = variants.VARIANTS[0].name
  case = (f'shapes train step, {setup.e2e_batch_size} x '
          f'{setup.e2e_image_size}px')
  return [{
      'section': 'ablation', 'case': case, 'variant': name,
      'precision': precision, 'xla': False,
      'extractor_weights': report.extractor_parameters(
          variants.BY_NAME[name]),
      'median_ms': 1e3 * seconds, 'ratio': seconds / timed[baseline],
      'images_per_s': setup.e2e_batch_size / seconds,
  } for name, seconds in timed.items()]
