"""What `train.py` runs: Model Garden's experiment runner, with three fixes.

1. The strategy uses every visible GPU. Model Garden's `runtime.num_gpus`
   defaults to 0, which silently builds a CPU-only `MirroredStrategy` on a
   GPU machine; here 0 means "all visible GPUs" (hide them with
   `CUDA_VISIBLE_DEVICES=` to train on CPU). The strategy and its replicas
   are logged at start.
2. Progress: every `trainer.steps_per_loop` steps a line with the step, the
   losses, steps/s and the ETA (Model Garden logs no ETA).
3. The final evaluation is printed as a table and saved as
   `<model_dir>/metrics.json`.

Everything else (checkpoints and resuming from the latest one, TensorBoard
summaries under `<model_dir>/train` and `<model_dir>/validation`, COCO
evaluation) is Model Garden's `train_lib.OrbitExperimentRunner`.
"""

import datetime
import json
import os
import time
from typing import Any, Dict, Mapping, Optional

from absl import logging
import numpy as np
import tensorflow as tf
from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_lib
from official.core import train_utils
from official.modeling import performance

# Registers the groie_tf experiments and task with Model Garden.
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.data import class_ids

# The metrics printed at the end, in Model Garden's COCO evaluator's names.
_BOX_METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
_MASK_METRICS = tuple('mask_' + name for name in _BOX_METRICS)


def build_strategy(runtime: cfg.RuntimeConfig) -> tf.distribute.Strategy:
  """Model Garden's strategy for `runtime`, on all visible GPUs by default."""
  num_gpus = runtime.num_gpus
  if (runtime.distribution_strategy in ('mirrored', 'multi_worker_mirrored')
      and num_gpus == 0):
    num_gpus = len(tf.config.list_physical_devices('GPU'))
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=runtime.distribution_strategy,
      all_reduce_alg=runtime.all_reduce_alg,
      num_gpus=num_gpus,
      num_packs=runtime.num_packs,
      tpu_address=runtime.tpu)
  try:
    devices = strategy.extended.worker_devices
  except (AttributeError, RuntimeError):  # not every strategy lists them
    devices = ()
  logging.info('Distribution: %s with %d replica(s) in sync on %s',
               type(strategy).__name__, strategy.num_replicas_in_sync,
               ', '.join(devices) or 'the default device')
  return strategy


def _format_duration(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(round(seconds))))


class ProgressLogger:
  """An Orbit train action: logs step, losses, steps/s and ETA.

  Called by the controller with the train output after each loop of
  `steps_per_loop` steps. The rate counts steps run by this process since it
  started (so it is right after a resume).
  """

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self.global_step: Optional[tf.Variable] = None  # set once built
    self._start: Optional[tuple] = None

  def __call__(self, output: Mapping[str, Any]) -> None:
    step = int(self.global_step.numpy())
    now = time.monotonic()
    if self._start is None:
      # The first loop includes tracing: rates are measured from its end.
      self._start = (step, now)
      rate_text, eta_text = 'warming up', 'unknown'
    else:
      steps_done = step - self._start[0]
      rate = steps_done / max(now - self._start[1], 1e-9)
      rate_text = f'{rate:.2f} steps/s'
      eta_text = _format_duration((self.total_steps - step) / max(rate, 1e-9))
    losses = ' '.join(f'{k} {float(np.mean(v)):.4f}'
                      for k, v in sorted(output.items())
                      if np.size(v) and 'loss' in k)
    logging.info('step %d/%d (%.0f%%) | %s | %s | ETA %s', step,
                 self.total_steps, 100 * step / self.total_steps, losses,
                 rate_text, eta_text)


class EvalRecorder:
  """An Orbit eval action that keeps the last evaluation's metrics."""

  def __init__(self):
    self.metrics: Dict[str, float] = {}

  def __call__(self, output: Mapping[str, Any]) -> None:
    self.metrics = {k: float(np.mean(v)) for k, v in output.items()
                    if np.size(v) == 1}


def format_metrics(metrics: Mapping[str, float]) -> str:
  """The box and mask COCO AP of an evaluation, as a small table."""
  lines = []
  for title, names in (('box', _BOX_METRICS), ('mask', _MASK_METRICS)):
    if any(name in metrics for name in names):
      values = ' '.join(f'{metrics.get(name, float("nan")):7.4f}'
                        for name in names)
      lines.append(f'{title:5s}{values}')
  header = '     ' + ' '.join(f'{name:>7s}' for name in _BOX_METRICS)
  return '\n'.join([header] + lines)


def run(params: cfg.ExperimentConfig, mode: str, model_dir: str,
        experiment: str = '') -> Dict[str, float]:
  """Runs `mode` for a validated experiment; returns the last eval metrics."""
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(
        params.runtime.mixed_precision_dtype)
  strategy = build_strategy(params.runtime)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  if task.task_config.annotation_file:  # the built-in set's is known by now
    class_ids.check_annotation_file(task.task_config.annotation_file,
                                    task.task_config.model.num_classes)
  if 'train' in mode:
    train_utils.serialize_config(params, model_dir)
  progress = ProgressLogger(params.trainer.train_steps)
  recorder = EvalRecorder()
  logging.info('Experiment %s, mode %s, model_dir %s: %d steps of %d images '
               '(%d per replica)', experiment or type(params).__name__, mode,
               model_dir, params.trainer.train_steps,
               params.task.train_data.global_batch_size,
               params.task.train_data.global_batch_size //
               strategy.num_replicas_in_sync)
  runner = train_lib.OrbitExperimentRunner(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir, train_actions=[progress], eval_actions=[recorder])
  progress.global_step = runner.trainer.global_step
  runner.run()
  if recorder.metrics:
    step = int(runner.trainer.global_step.numpy())
    logging.info('Evaluation at step %d:\n%s', step,
                 format_metrics(recorder.metrics))
    print(f'COCO evaluation at step {step} ({experiment}):\n'
          f'{format_metrics(recorder.metrics)}', flush=True)
    if strategy.extended.should_checkpoint:
      with tf.io.gfile.GFile(os.path.join(model_dir, 'metrics.json'),
                             'w') as f:
        json.dump({'step': step, 'experiment': experiment,
                   'metrics': recorder.metrics}, f, indent=1)
  return recorder.metrics
