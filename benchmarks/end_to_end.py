"""End to end: a Mask R-CNN training step with and without GRoIE.

The two models come from one GRoIE experiment and differ only in the RoI
aligners: the baseline sets both GRoIE blocks to null, which gives Model
Garden's stock aligners. Both run `task.train_step` (forward, losses,
backward, optimizer update) on one fixed batch of the built-in shapes data
set, so the input pipeline is not timed.

If time followed FLOPs, GRoIE's step would take `gflop(GRoIE) /
gflop(stock)` times the baseline's: the `predicted` column. A `ratio` at or
under it means GRoIE's arithmetic runs at least as fast as the rest of the
model's.
"""

from official.core import exp_factory
from official.core import task_factory
import tensorflow as tf

from benchmarks import flops
from benchmarks import timing
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.data import shapes

EXPERIMENTS = {'shapes': 'groie_maskrcnn_shapes',
               'coco': 'groie_maskrcnn_resnetfpn_coco'}


def _config(setup, data, precision, with_groie):
  config = exp_factory.get_exp_config(EXPERIMENTS[setup.e2e_experiment])
  size = setup.e2e_image_size
  model = {'input_size': [size, size, 3]}
  if not with_groie:
    model.update(box_groie=None, mask_groie=None)
  config.override({
      'runtime': {'mixed_precision_dtype': precision.split('_')[-1]},
      'task': {
          'shapes_data': data.as_dict(),
          'init_checkpoint': '',
          'annotation_file': '',
          'model': model,
          'train_data': {'input_path': '',
                         'global_batch_size': setup.e2e_batch_size},
          'validation_data': {'input_path': ''},
      },
  }, is_strict=True)
  config.validate()
  return config


def _train_steps(setup, data, precision, with_groie):
  """Train steps of one fresh model (XLA as in `setup.xla`), aligner names."""
  config = _config(setup, data, precision, with_groie)
  task = task_factory.get_task(config.task)
  model = task.build_model()
  optimizer = task.create_optimizer(config.trainer.optimizer_config,
                                    config.runtime)
  batch = next(iter(task.build_inputs(config.task.train_data)))
  steps = {xla: tf.function(lambda: task.train_step(batch, model, optimizer),
                            jit_compile=xla) for xla in setup.xla}
  aligners = [model.roi_aligner.name, model.mask_roi_aligner.name]
  return steps, aligners


def run(setup, precision):
  skipped = setup.why_not_backward(precision)
  if skipped:
    return [{'section': 'end_to_end', 'variant': 'both', 'precision': precision,
             'skipped': skipped}]
  data = shapes.ShapesDataset(
      root=setup.work_dir, num_train_images=2 * setup.e2e_batch_size,
      num_val_images=1, image_size=setup.e2e_image_size, seed=0)
  shapes.ensure_dataset(data)
  baseline, groie = 'stock aligners', 'GRoIE (box and mask)'
  steps = {}
  aligners = {}
  for name, with_groie in ((baseline, False), (groie, True)):
    steps[name], aligners[name] = _train_steps(setup, data, precision,
                                               with_groie)
  graphs = {name: steps[name][setup.xla[0]].get_concrete_function().graph
            for name in steps}
  counts = {name: flops.graph_flops(graph) for name, graph in graphs.items()}
  shares = {baseline: 0.0,
            groie: flops.graph_flops(graphs[groie], aligners[groie]) /
                   counts[groie]}
  case = (f'{EXPERIMENTS[setup.e2e_experiment]} train step, '
          f'{setup.e2e_batch_size} x {setup.e2e_image_size}px')
  rows = []
  for xla in setup.xla:
    timed = setup.time({name: steps[name][xla] for name in steps})
    for name, seconds in timed.items():
      rows.append({
          'section': 'end_to_end', 'case': case, 'variant': name,
          'precision': precision, 'xla': xla,
          'median_ms': 1e3 * seconds, 'ratio': seconds / timed[baseline],
          'images_per_s': setup.e2e_batch_size / seconds,
          'gflop': counts[name] / 1e9,
          'predicted': counts[name] / counts[baseline],
          'groie_flop_share': shares[name],
          'peak_mb': timing.megabytes(timing.peak_bytes(steps[name][xla],
                                                        setup.device)),
      })
  return rows
