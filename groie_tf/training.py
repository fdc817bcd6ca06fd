"""What `train.py` runs: Model Garden's experiment runner, with fixes.

1. The strategy uses every visible GPU. Model Garden's `runtime.num_gpus`
   defaults to 0, which silently builds a CPU-only `MirroredStrategy` on a
   GPU machine; here 0 means "all visible GPUs" (hide them with
   `CUDA_VISIBLE_DEVICES=` to train on CPU). The strategy, its replicas and
   TensorFlow's CPU kernel library (`cpu_kernels`) are logged at start.
2. Progress: every `trainer.steps_per_loop` steps a line with the step, the
   losses, steps/s and the ETA (Model Garden logs no ETA).
3. Stopping and resuming: SIGTERM or SIGINT save a checkpoint at the
   current step (`groie_tf.stopping`); every worker of a multi-worker run
   resumes from the chief's checkpoint (`groie_tf.runner`); a resumed run
   is reseeded so it does not replay the data (`resumed_params`).
4. The annotation file's class ids are checked against `num_classes`
   before training (the task checks every batch).
5. The final evaluation is printed once, as a table, and saved as
   `<model_dir>/metrics.json`; only the chief writes files and summaries.

Everything else (checkpoints, TensorBoard summaries under
`<model_dir>/train` and `<model_dir>/validation`, COCO evaluation) is Model
Garden's `train_lib.OrbitExperimentRunner`.
"""

import datetime
import json
import os
import re
import signal
import time
import zlib
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_utils
from official.modeling import performance
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import

# Registers the groie_tf experiments and task with Model Garden.
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf import runner as experiment_runner
from groie_tf import stopping
from groie_tf.data import class_ids
from groie_tf.tasks import grid_rcnn as grid_rcnn_task

# The metrics printed at the end, in Model Garden's COCO evaluator's names.
BOX_METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
MASK_METRICS = tuple('mask_' + name for name in BOX_METRICS)
# Grid R-CNN's detections before the grid's vote (`GridRCNNTask`).
BEFORE_GRID_METRICS = tuple(grid_rcnn_task.BEFORE_GRID_PREFIX + name
                            for name in BOX_METRICS)


def cpu_kernels() -> str:
  """'oneDNN' or 'Eigen': the CPU kernels TensorFlow chose when it started.

  TensorFlow's Linux wheels run oneDNN's kernels on CPUs with AVX-512 VNNI
  or BF16, AVX-VNNI or AMX, and Eigen's on others;
  `TF_ENABLE_ONEDNN_OPTS=0` or `1` overrides that. The two round
  differently, so one seed trains to other weights under each (the tiny
  experiment's losses are 0.5% apart after one step,
  tests/test_training.py). Two runs on one machine end bit for bit equal;
  on another processor even the same library may not (docs/results.md).
  """
  return 'oneDNN' if _pywrap_util_port.IsMklEnabled() else 'Eigen'


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
  logging.info('Distribution: %s with %d replica(s) in sync on %s; CPU '
               'kernels: %s', type(strategy).__name__,
               strategy.num_replicas_in_sync,
               ', '.join(devices) or 'the default device', cpu_kernels())
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
  """An Orbit eval action that keeps the last evaluation's metrics and logs
  its box and mask AP (Grid R-CNN: and the box AP before the grid's vote)
  in one line."""

  def __init__(self):
    self.metrics: Dict[str, float] = {}

  def __call__(self, output: Mapping[str, Any]) -> None:
    # Model Garden's Mask R-CNN computes no loss in evaluation and reports
    # validation_loss 0.0: left out rather than published.
    self.metrics = {k: float(np.mean(v)) for k, v in output.items()
                    if np.size(v) == 1 and k != 'validation_loss'}
    logging.info('Evaluation: %s', ' '.join(
        f'{name} {self.metrics[name]:.4f}'
        for name in ('AP', 'mask_AP', BEFORE_GRID_METRICS[0])
        if name in self.metrics))


def format_metrics(metrics: Mapping[str, float]) -> str:
  """The box and mask COCO AP of an evaluation (and Grid R-CNN's box AP
  before its grid refinement), as a small table."""
  rows = [(title, names) for title, names in (
      ('box', BOX_METRICS), ('mask', MASK_METRICS),
      ('box before grid', BEFORE_GRID_METRICS))
           if any(name in metrics for name in names)]
  width = max([len(title) for title, _ in rows] + [3]) + 2
  lines = [' ' * width + ' '.join(f'{name:>7s}' for name in BOX_METRICS)]
  for title, names in rows:
    values = ' '.join(f'{metrics.get(name, float("nan")):7.4f}'
                      for name in names)
    lines.append(f'{title:{width}s}{values}')
  return '\n'.join(lines)


def resumed_params(params: cfg.ExperimentConfig,
                   model_dir: str) -> Tuple[cfg.ExperimentConfig, int]:
  """`params` for a run that resumes at the latest checkpoint's step.

  A seeded input pipeline restarts in the same order, so a resumed run
  would see the first batches again. Model Garden's pipeline cannot skip
  ahead cheaply (it would decode every skipped image), so a resumed run is
  reseeded instead: `task.seed` (and `train_data.seed`, if set) become a
  function of the seed and the step resumed from. Weights come from the
  checkpoint; the data order and augmentation of the rest of the run are
  new, and reproducible for that resume step.

  Returns:
    (params, step resumed from, 0 for a new run).
  """
  latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
  # Model Garden numbers checkpoints by global step: ckpt-<step>.
  numbered = re.search(r'-(\d+)$', latest or '')
  step = int(numbered.group(1)) if numbered else 0
  if not step:
    return params, 0

  def reseeded(seed):  # distinct per (seed, step), unlike seed + step
    return (None if seed is None else
            zlib.crc32(f'{seed}:{step}'.encode()) & 0x7FFFFFFF)

  params = params.replace(task={
      'seed': reseeded(params.task.seed),
      'train_data': {'seed': reseeded(params.task.train_data.seed)}})
  logging.info('Resuming at step %d: the data order is reseeded (task.seed '
               '%s) so that no batch is replayed.', step, params.task.seed)
  return params, step


def run(params: cfg.ExperimentConfig, mode: str, model_dir: str,
        experiment: str = '') -> Dict[str, float]:
  """Runs `mode` for a validated experiment; returns the last eval metrics.

  Raises:
    stopping.StopRequested: after SIGTERM or SIGINT, once the checkpoint
      of the current step is saved.
  """
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(
        params.runtime.mixed_precision_dtype)
  strategy = build_strategy(params.runtime)
  is_chief = strategy.extended.should_checkpoint
  if 'train' in mode and is_chief:  # as given: a resume's seeds are derived
    train_utils.serialize_config(params, model_dir)
  if 'train' in mode:
    params, _ = resumed_params(params, model_dir)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  if task.task_config.annotation_file:  # the built-in set's is known by now
    class_ids.check_annotation_file(task.task_config.annotation_file,
                                    task.task_config.model.num_classes)
  progress = ProgressLogger(params.trainer.train_steps)
  recorder = EvalRecorder()
  stop = stopping.SignalStop(strategy, saves_checkpoint='train' in mode)
  logging.info('Experiment %s, mode %s, model_dir %s: %d steps of %d images '
               '(%d per replica)', experiment or type(params).__name__, mode,
               model_dir, params.trainer.train_steps,
               params.task.train_data.global_batch_size,
               params.task.train_data.global_batch_size //
               strategy.num_replicas_in_sync)
  # Only the chief writes summaries: workers would clash in one folder.
  runner = experiment_runner.ExperimentRunner(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir, save_summary=is_chief,
      train_actions=[progress, stop], eval_actions=[recorder, stop])
  progress.global_step = runner.trainer.global_step
  try:
    with stop.handling_signals():
      runner.run()
  except stopping.StopRequested as stopped:
    step = int(runner.trainer.global_step.numpy())
    report = (f'Stopped by {signal.Signals(stopped.signal_number).name} at '
              f'step {step}/{params.trainer.train_steps}')
    if 'train' not in mode:
      logging.warning('%s, in evaluation.', report)
    else:  # every worker takes part in the save
      path = runner.checkpoint_manager.save(checkpoint_number=step,
                                            check_interval=False)
      logging.warning('%s; %s. Run the same command to resume.', report,
                      f'saved checkpoint {path}' if is_chief else
                      'the chief saved the checkpoint')
    raise
  finally:
    runner.cleanup()
  if recorder.metrics:
    step = int(runner.trainer.global_step.numpy())
    print(f'COCO evaluation at step {step} ({experiment}):\n'
          f'{format_metrics(recorder.metrics)}', flush=True)
    if is_chief:
      with tf.io.gfile.GFile(os.path.join(model_dir, 'metrics.json'),
                             'w') as f:
        json.dump({'step': step, 'experiment': experiment,
                   'metrics': recorder.metrics}, f, indent=1)
  return recorder.metrics
