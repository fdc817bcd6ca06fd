"""What `train.py` runs: Model Garden's experiment runner, with fixes.

1. Devices and precision. The strategy uses every visible GPU: Model
   Garden's `runtime.num_gpus` defaults to 0, which silently builds a
   CPU-only `MirroredStrategy` on a GPU machine; here 0 means "all visible
   GPUs" (hide them with `CUDA_VISIBLE_DEVICES=` to train on CPU), and a
   count above the visible GPUs is refused before anything is built. The
   compute dtype 'auto' is chosen for the devices (`groie_tf.precision`).
   The strategy, its devices, the dtype with its reason and TensorFlow's
   CPU kernel library (`cpu_kernels`) are logged at start.
2. Progress: every `trainer.steps_per_loop` steps a line with the step, the
   losses, steps/s and the ETA (Model Garden logs no ETA); an evaluation
   logs its step, s/step and ETA too, its length counted from the data.
3. Stopping and resuming: SIGTERM or SIGINT save a checkpoint at the
   current step (`groie_tf.stopping`); every worker of a multi-worker run
   resumes from the chief's checkpoint (`groie_tf.runner`); a resumed run
   is reseeded so it does not replay the data (`resumed_params`).
4. Checks before the model is built: frozen backbone weights need a
   checkpoint (`check_frozen_backbone_initialized`); data patterns must
   match files, the validation records' image ids must be images of the
   annotation file (`groie_tf.data.preflight`), and its class ids must fit
   `num_classes` (the task checks every batch too).
5. A record that does not decode (or does not read) stops the run with one
   message naming the data and the checker command, after a checkpoint of
   the last completed step (`DataError`); `task.skip_bad_records` skips
   such records instead.
6. The final evaluation is printed once, as a table, and saved as
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
from typing import Any, Dict, List, Mapping, Optional, Tuple

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
from groie_tf import precision
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf import runner as experiment_runner
from groie_tf import stopping
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import class_ids
from groie_tf.data import preflight
from groie_tf.errors import ConfigError
from groie_tf.errors import DataError
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
  """Model Garden's strategy for `runtime`, on all visible GPUs by default.

  Raises:
    ConfigError: if `runtime.num_gpus` asks for more GPUs than TensorFlow
      sees (Model Garden would build a strategy on devices that do not
      exist and fail later, on a batch-size message).
  """
  num_gpus = runtime.num_gpus
  visible = len(tf.config.list_physical_devices('GPU'))
  if runtime.distribution_strategy in ('mirrored', 'one_device', 'off') and (
      num_gpus > visible):
    raise ConfigError(
        f'runtime.num_gpus is {num_gpus}, but TensorFlow sees {visible} GPU(s) '
        'on this machine: set runtime.num_gpus=0 to use every visible GPU '
        f'(the CPU if there is none), or a count up to {visible}. With fewer '
        'GPUs than a config was written for, scale task.train_data.'
        'global_batch_size and the learning rates with it.')
  if (runtime.distribution_strategy in ('mirrored', 'multi_worker_mirrored')
      and num_gpus == 0):
    num_gpus = visible
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=runtime.distribution_strategy,
      all_reduce_alg=runtime.all_reduce_alg,
      num_gpus=num_gpus,
      num_packs=runtime.num_packs,
      tpu_address=runtime.tpu)
  logging.info('Distribution: %s with %d replica(s) in sync on %s; CPU '
               'kernels: %s', type(strategy).__name__,
               strategy.num_replicas_in_sync,
               ', '.join(precision.worker_devices(strategy)) or
               'the default device', cpu_kernels())
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


class EvaluationProgress:
  """A `runner.EvaluationListener`: logs how far an evaluation has got.

  A line at its first step, then whenever `interval_seconds` have passed
  since the last line, and at its last step; `total_steps` (None if
  unknown) gives the percentage and the ETA, measured from the end of the
  first step (which includes tracing).
  """

  def __init__(self, total_steps: Optional[int],
               interval_seconds: float = 60.0):
    self.total_steps = total_steps
    self.interval_seconds = interval_seconds
    self.active = False  # between `begin` and `end`
    self._step = 0
    self._first_step_end = 0.0
    self._last_line = 0.0

  def begin(self) -> None:
    self.active = True
    self._step = 0

  def step(self) -> None:
    self._step += 1
    now = time.monotonic()
    total = self.total_steps
    if self._step == 1:
      self._first_step_end = now
      rate_text, eta_text = 'warming up', 'unknown'
    elif self._step == total or now - self._last_line >= self.interval_seconds:
      seconds_per_step = (now - self._first_step_end) / (self._step - 1)
      rate_text = f'{seconds_per_step:.2f} s/step'
      eta_text = (_format_duration((total - self._step) * seconds_per_step)
                  if total else 'unknown')
    else:
      return
    self._last_line = now
    of_total = f'/{total} ({100 * self._step / total:.0f}%)' if total else ''
    logging.info('evaluation step %d%s | %s | ETA %s', self._step, of_total,
                 rate_text, eta_text)

  def end(self) -> None:
    self.active = False
    logging.info('Evaluation: %d step(s) run; computing the COCO metrics.',
                 self._step)


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


# In a model_dir: the steps its run resumed at, in order, as a JSON list.
RESUMES_FILE = 'resumed_at.json'


def resume_steps(model_dir: str) -> List[int]:
  """The steps the run in `model_dir` resumed at, oldest first ([] for a
  run that never resumed). A resumed run is reseeded (`resumed_params`),
  so its result is a function of its seed and of these steps."""
  path = os.path.join(model_dir, RESUMES_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _record_resume(model_dir: str, step: int) -> None:
  steps = resume_steps(model_dir) + [step]
  with tf.io.gfile.GFile(os.path.join(model_dir, RESUMES_FILE), 'w') as f:
    json.dump(steps, f)


def evaluation_steps(params: cfg.ExperimentConfig, task_config) -> Optional[int]:
  """The steps an evaluation runs, counted from the validation records
  (whose images are first checked against the annotation file's); None
  for data read through TFDS."""
  data = task_config.validation_data
  if not data.input_path:
    return None
  images = preflight.validation_images(data.input_path)
  decoder = data.decoder.get()
  if task_config.annotation_file and not getattr(
      decoder, 'regenerate_source_id', False):
    preflight.check_images_in_annotation_file(
        images, task_config.annotation_file, data.input_path)
  steps = -(-len(images) // data.global_batch_size)
  if params.trainer.validation_steps > 0:
    steps = min(steps, params.trainer.validation_steps)
  logging.info('Evaluation: %d step(s) of %d image(s), over the %d record(s) '
               'of %s.', steps, data.global_batch_size, len(images),
               data.input_path)
  return steps


def _from_input_pipeline(error: tf.errors.OpError) -> bool:
  """Whether a step failed reading its input: TensorFlow names the step
  function's iterator op (`IteratorGetNext`, or the multi-device
  `MultiDeviceIteratorGetNextFromShard`) in the error of every op that runs
  inside the tf.data pipeline. The only mark an op error carries of where
  it was raised."""
  return 'IteratorGetNext' in str(error)


def _reason(error: tf.errors.OpError) -> str:
  """The line of a tf.data error that says what went wrong."""
  lines = [line.strip() for line in str(error).splitlines()]
  reasons = [line for line in lines if line and not line.startswith((
      'Graph execution error', 'Detected at node', '<stack', '[[', 'File "'))]
  reason = reasons[0] if reasons else lines[0]
  # "Error in user-defined function passed to ParallelMapDatasetV2:8
  # transformation with iterator: Iterator::Root::...: <what>"
  return re.sub(r'^Error in user-defined function .* with iterator: \S+: ',
                '', reason)


def _data_error(error: tf.errors.OpError, task_config, in_evaluation: bool,
                saved: str) -> DataError:
  """What to tell the user when `error` came out of the input pipeline."""
  data = task_config.validation_data if in_evaluation else (
      task_config.train_data)
  which = 'validation' if in_evaluation else 'training'
  skip = '' if in_evaluation else (
      '; or skip records that do not decode with task.skip_bad_records=true')
  return DataError(
      f'The {which} data {data.input_path} stopped the run: '
      f'{_reason(error).rstrip(".")}. '
      f'{saved}Find the record with: python -m groie_tf.data.check_tfrecords '
      f"--pattern='{data.input_path}' --num_classes="
      f'{task_config.model.num_classes}{skip}.')


def _rewind_to_last_update(trainer) -> int:
  """Sets the global step to the number of steps whose update was applied,
  and returns it.

  In Model Garden's train step nothing orders the global step's increment
  after the read of the step's input, so a step whose input fails may
  count itself (seen: ckpt-3 holding the weights of step 2). The
  optimizer's counter moves with the update, which needs the input.
  """
  updates = int(trainer.optimizer.iterations.numpy())
  if updates < int(trainer.global_step.numpy()):
    trainer.global_step.assign(updates)
  return int(trainer.global_step.numpy())


def run(params: cfg.ExperimentConfig, mode: str, model_dir: str,
        experiment: str = '') -> Dict[str, float]:
  """Runs `mode` for a validated experiment; returns the last eval metrics.

  Raises:
    stopping.StopRequested: after SIGTERM or SIGINT, once the checkpoint
      of the current step is saved.
    UserError: a check of the config or the data before the model is built
      failed (`ConfigError`, `DataError`).
    DataError: a record of the data did not read or decode (training
      modes: after saving a checkpoint of the last completed step).
  """
  training = 'train' in mode
  if training and isinstance(params.task, groie_config.GRoIEMaskRCNNTask):
    groie_config.check_frozen_backbone_initialized(params.task)
  strategy = build_strategy(params.runtime)
  dtype, reason = precision.for_strategy(params.runtime.mixed_precision_dtype,
                                         strategy)
  performance.set_mixed_precision_policy(dtype)
  logging.info('Precision: %s (%s).', dtype, reason)
  is_chief = strategy.extended.should_checkpoint
  if training and is_chief:  # as given: a resume's seeds are derived
    train_utils.serialize_config(params, model_dir)
  if training:
    params, resumed_at = resumed_params(params, model_dir)
    if resumed_at and is_chief:
      _record_resume(model_dir, resumed_at)
  params = params.replace(runtime={'mixed_precision_dtype': dtype})
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  task_config = task.task_config  # the built-in set's paths are known by now
  preflight.check_input_paths(task_config, mode)
  if task_config.annotation_file:
    class_ids.check_annotation_file(task_config.annotation_file,
                                    task_config.model.num_classes)
  evaluation = EvaluationProgress(
      evaluation_steps(params, task_config) if 'eval' in mode else None)
  progress = ProgressLogger(params.trainer.train_steps)
  recorder = EvalRecorder()
  stop = stopping.SignalStop(strategy, saves_checkpoint=training)
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
  runner.trainer.evaluation_listener = evaluation
  progress.global_step = runner.trainer.global_step

  def save_current_step() -> str:
    """Saves a checkpoint of the last completed step (every worker takes
    part); says where."""
    step = int(runner.trainer.global_step.numpy())
    path = runner.checkpoint_manager.save(checkpoint_number=step,
                                          check_interval=False)
    return (f'saved checkpoint {path}' if is_chief else
            'the chief saved the checkpoint')

  try:
    with stop.handling_signals():
      runner.run()
  except stopping.StopRequested as stopped:
    step = int(runner.trainer.global_step.numpy())
    report = (f'Stopped by {signal.Signals(stopped.signal_number).name} at '
              f'step {step}/{params.trainer.train_steps}')
    if not training:
      logging.warning('%s, in evaluation.', report)
    else:
      logging.warning('%s; %s. Run the same command to resume.', report,
                      save_current_step())
    raise
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
    if not _from_input_pipeline(error):
      raise
    saved = ''
    if training:
      step = _rewind_to_last_update(runner.trainer)
      saved = (f'At step {step}/{params.trainer.train_steps}, '
               f'{save_current_step()}; the same command resumes there once '
               'the data is mended. ')
    raise _data_error(error, task_config, evaluation.active, saved) from None
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
