"""Runs variants x seeds through `groie_tf.train`, once each, and records them.

A run is `python -m groie_tf.train --mode=train_and_eval` in a child
process, with the variant's config delta, the seed and the evaluation
interval in one YAML file beside its checkpoints (`<work_dir>/<variant>_seed<k>/ablation.yaml`).
When it ends, its record goes to `<results_dir>/ablation/runs/` as JSON:
final COCO metrics, the evaluations over training and the training time,
all read from the run's own summaries. A run with a record is never run
again; a run without one (new, killed, failed) is run, and resumes from its
last checkpoint if it has one. The records, not the checkpoints, are what a
sweep keeps: commit them and the table can be rebuilt anywhere.

SIGTERM or Ctrl-C stops the sweep the way it stops a training run: the
running child gets SIGTERM, saves its step and exits; no record is written,
so the next sweep resumes that run. A second signal reaches the child too,
which then exits at once (`groie_tf.stopping`).
"""

import datetime
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf
import yaml

from groie_tf import stopping
from groie_tf import training
from groie_tf.ablation import variants as variants_lib
from groie_tf.errors import ConfigError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Lines of a failed run's log kept in its record.
_LOG_TAIL_LINES = 30


class SweepStopped(Exception):
  """The sweep got SIGTERM or SIGINT; the running child saved its step."""

  def __init__(self, signal_number: int):
    super().__init__(signal.Signals(signal_number).name)
    self.signal_number = signal_number


class ConfigMismatch(ConfigError):
  """A record was made with other settings than this sweep's."""


def runs_dir(results_dir: str) -> str:
  return os.path.join(results_dir, 'ablation', 'runs')


def run_name(variant: variants_lib.Variant, seed: int) -> str:
  return f'{variant.name}_seed{seed}'


def _merged(base: Mapping[str, Any], delta: Mapping[str, Any]) -> Dict:
  """`base` with `delta` laid over it, nested dicts merged key by key."""
  out = dict(base)
  for key, value in delta.items():
    if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
      out[key] = _merged(out[key], value)
    else:
      out[key] = value
  return out


def run_config(variant: variants_lib.Variant, seed: int, eval_interval: int,
               override: Mapping[str, Any]) -> Dict[str, Any]:
  """The config delta of one run: variant, seed, evaluation interval, then
  the sweep's own `override` (tests shrink the runs with it)."""
  config = _merged(variant.override, {
      'task': {'seed': seed},
      'trainer': {'validation_interval': eval_interval}})
  return _merged(config, override)


def _scalars(event_dir: str) -> Dict[int, Dict[str, float]]:
  """{step: {tag: value}} of the summaries in `event_dir`; a step logged
  twice (a resumed run) keeps its last value."""
  out: Dict[int, Dict[str, float]] = {}
  for path in sorted(glob.glob(os.path.join(event_dir, 'events.out.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        number = (float(tf.make_ndarray(value.tensor))
                  if value.HasField('tensor') else float(value.simple_value))
        out.setdefault(int(event.step), {})[value.tag] = number
  return out


def read_run(model_dir: str) -> Dict[str, Any]:
  """What a finished run's summaries say: evaluations and training time.

  Training time is the sum over Orbit's loops of steps / (steps/s), so it
  leaves out evaluation and start-up (the first loop includes tracing).
  """
  evaluations = [
      {'step': step, **{k: v for k, v in metrics.items()
                        if k not in ('steps_per_second', 'validation_loss')}}
      for step, metrics in sorted(_scalars(
          os.path.join(model_dir, 'validation')).items())]
  train = sorted(_scalars(os.path.join(model_dir, 'train')).items())
  seconds, previous, rates, losses = 0.0, 0, [], []
  for step, values in train:
    if values.get('steps_per_second'):
      seconds += (step - previous) / values['steps_per_second']
      rates.append(values['steps_per_second'])
    previous = step
    if 'total_loss' in values:
      losses.append({'step': step, 'total_loss': values['total_loss']})
  rates.sort()
  return {
      'evaluations': evaluations,
      'training_losses': losses,
      'training_seconds': seconds,
      'median_steps_per_second': rates[len(rates) // 2] if rates else None,
  }


def machine() -> Dict[str, Any]:
  """What the runs train on, for their records: training times compare only
  between runs made on the same kind of machine.

  AVX-512 is named because 2-core AMD EPYC machines with it trained the
  main job 2 to 3 times faster than 2-core ones without it; the CPU kernel
  library (`training.cpu_kernels`) because one seed trains to other weights
  under each.
  """
  cpu, flags = '', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and not cpu:
          cpu = value.strip()
        elif key.strip() == 'flags' and not flags:
          flags = set(value.split())
  except OSError:  # not Linux
    pass
  return {
      'cpu': cpu or platform.processor() or platform.machine(),
      'cores': (len(os.sched_getaffinity(0))
                if hasattr(os, 'sched_getaffinity') else os.cpu_count()),
      'avx512': 'avx512f' in flags if flags else None,
      'gpus': len(tf.config.list_physical_devices('GPU')),
      'cpu_kernels': training.cpu_kernels(),
  }


def machine_label(described: Optional[Mapping[str, Any]]) -> str:
  """`machine()` in a few words; records made before it say so."""
  if not described:
    return 'not recorded'
  parts = [described['cpu'], f'{described["cores"]} cores']
  if described['avx512'] is not None:
    parts.append('AVX-512' if described['avx512'] else 'no AVX-512')
  if described.get('cpu_kernels'):  # older records lack it
    parts.append(described['cpu_kernels'] + ' kernels')
  parts.append(f'{described["gpus"]} GPU' if described['gpus'] else 'no GPU')
  return ', '.join(parts)


def _commit() -> str:
  try:
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          cwd=_PACKAGE_DIR, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def load_record(results_dir: str, name: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(runs_dir(results_dir), name + '.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_records(results_dir: str) -> List[Dict[str, Any]]:
  records = []
  for path in sorted(glob.glob(os.path.join(runs_dir(results_dir), '*.json'))):
    with open(path) as f:
      records.append(json.load(f))
  return records


def _write_record(results_dir: str, record: Mapping[str, Any]) -> None:
  directory = runs_dir(results_dir)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, record['run'] + '.json')
  with open(path + '.tmp', 'w') as f:  # never a half-written record
    json.dump(record, f, indent=1)
  os.replace(path + '.tmp', path)


class _ForwardSignals:
  """While a child runs, each SIGTERM and SIGINT reaches it as SIGTERM: the
  first makes it save its step and stop, a second stop at once.

  The child runs in its own session, so that Ctrl-C in a terminal reaches
  it only through here, once per key press.
  """

  def __init__(self):
    self.child: Optional[subprocess.Popen] = None
    self.signal_number: Optional[int] = None

  def on_signal(self, signal_number: int) -> None:
    """Called by `stopping.watching_signals`'s watcher thread."""
    if self.signal_number is None:
      self.signal_number = signal_number
    child = self.child
    if child is not None and child.poll() is None:
      child.send_signal(signal.SIGTERM)


def _log_tail(path: str) -> List[str]:
  with open(path, errors='replace') as f:
    return [line.rstrip('\n') for line in f.readlines()[-_LOG_TAIL_LINES:]]


def run_one(variant: variants_lib.Variant, seed: int, work_dir: str,
            results_dir: str, eval_interval: int,
            override: Mapping[str, Any],
            signals: _ForwardSignals) -> Dict[str, Any]:
  """Trains and evaluates one run in a child process; returns its record.

  Raises:
    SweepStopped: the sweep was asked to stop; the child saved its step.
  """
  if signals.signal_number is not None:  # a signal between two runs
    raise SweepStopped(signals.signal_number)
  name = run_name(variant, seed)
  model_dir = os.path.join(work_dir, name)
  os.makedirs(model_dir, exist_ok=True)
  config = run_config(variant, seed, eval_interval, override)
  config_path = os.path.join(model_dir, 'ablation.yaml')
  with open(config_path, 'w') as f:
    yaml.safe_dump(config, f, sort_keys=True)
  log_path = os.path.join(model_dir, 'train.log')
  command = [sys.executable, '-m', 'groie_tf.train',
             f'--experiment={variant.experiment}', '--mode=train_and_eval',
             f'--model_dir={model_dir}', f'--config_file={config_path}']
  start = time.monotonic()
  with open(log_path, 'a') as log:
    log.write(f'\n=== {datetime.datetime.now().isoformat(timespec="seconds")}'
              f' {" ".join(command)}\n')
    log.flush()
    signals.child = subprocess.Popen(command, stdout=log,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
    if signals.signal_number is not None:  # it came while the child started
      signals.child.send_signal(signal.SIGTERM)
    exit_code = signals.child.wait()
    signals.child = None
  wall_seconds = time.monotonic() - start
  if signals.signal_number is not None:
    raise SweepStopped(signals.signal_number)
  record = {
      'run': name, 'variant': variant.name, 'seed': seed,
      'experiment': variant.experiment, 'config': config,
      'commit': _commit(), 'machine': machine(), 'model_dir': model_dir,
      'finished': datetime.datetime.now().isoformat(timespec='seconds'),
      'wall_seconds_last_attempt': round(wall_seconds, 1),
      'exit_code': exit_code,
      'resumed_at': training.resume_steps(model_dir),
  }
  metrics_path = os.path.join(model_dir, 'metrics.json')
  if exit_code == 0 and os.path.exists(metrics_path):
    with open(metrics_path) as f:
      final = json.load(f)
    record.update(status='ok', step=final['step'], final=final['metrics'],
                  **read_run(model_dir))
  else:
    record.update(status='failed', log_tail=_log_tail(log_path))
  return record


def plan(variants: Sequence[variants_lib.Variant],
         seeds: Sequence[int]) -> List[tuple]:
  """(variant, seed) in the order run: seed by seed, so that a sweep run
  in parts has every variant at one seed before any at the next."""
  return [(variant, seed) for seed in seeds for variant in variants]


def run_sweep(variants: Sequence[variants_lib.Variant], seeds: Sequence[int],
              work_dir: str, results_dir: str, eval_interval: int = 150,
              override: Optional[Mapping[str, Any]] = None,
              max_runs: int = 0,
              on_record: Optional[Callable[[], None]] = None) -> int:
  """Runs every (variant, seed) without an 'ok' record; returns how many ran.

  A failed run's record stays until a later sweep runs it again (it
  resumes from its checkpoint, if it saved one); the report lists it and
  leaves it out of the means.

  Args:
    max_runs: stop after this many runs (0: no limit), to run a sweep in
      parts.
    on_record: called after each record is written (the report is rebuilt).

  Raises:
    ConfigMismatch: an 'ok' record was made with another config delta.
    SweepStopped: SIGTERM or SIGINT.
  """
  override = dict(override or {})
  runs = plan(variants, seeds)
  todo = []
  for variant, seed in runs:
    record = load_record(results_dir, run_name(variant, seed))
    config = run_config(variant, seed, eval_interval, override)
    if record and record['status'] == 'ok':
      if record['config'] != config:
        raise ConfigMismatch(
            f'{results_dir} already holds run {record["run"]} made with '
            f'another config ({record["config"]}, this sweep: {config}). '
            'Choose another --results_dir, or delete that record to run it '
            'again.')
      continue
    todo.append((variant, seed))
  recorded = len(runs) - len(todo)
  if max_runs:
    todo = todo[:max_runs]
  logging.info('Ablation: %d run(s) to do now, %d already recorded in %s.',
               len(todo), recorded, runs_dir(results_dir))
  durations = []
  signals = _ForwardSignals()
  with stopping.watching_signals(signals.on_signal):
    for index, (variant, seed) in enumerate(todo):
      eta = ('unknown' if not durations else str(datetime.timedelta(
          seconds=int(sum(durations) / len(durations) * (len(todo) - index)))))
      logging.info('Run %d/%d: %s (seed %d), log %s; ETA of the sweep %s',
                   index + 1, len(todo), variant.name, seed,
                   os.path.join(work_dir, run_name(variant, seed),
                                'train.log'), eta)
      record = run_one(variant, seed, work_dir, results_dir, eval_interval,
                       override, signals)
      durations.append(record['wall_seconds_last_attempt'])
      _write_record(results_dir, record)
      if record['status'] == 'ok':
        logging.info('%s: box AP %.4f, mask AP %.4f in %.0f min.',
                     record['run'], record['final'].get('AP', float('nan')),
                     record['final'].get('mask_AP', float('nan')),
                     record['wall_seconds_last_attempt'] / 60)
      else:
        logging.error('%s FAILED (exit %d); the last lines of its log are in '
                      'its record, the whole log in %s.', record['run'],
                      record['exit_code'], record['model_dir'])
      if on_record:
        on_record()
  return len(todo)
