"""The ablation runner end to end: a failed run is reported, and a killed
sweep goes on without redoing a finished run."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

from groie_tf.ablation import report
from groie_tf.ablation import sweep
from groie_tf.ablation import variants as variants_lib
from tests.tiny_experiment import tiny_override

# Each test trains through train.py in child processes: minutes.
pytestmark = pytest.mark.slow

_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tiny_override(shapes_data):
  """Every run a few seconds of training; the sweep sets the evaluation
  interval itself."""
  override = tiny_override(shapes_data)
  del override['trainer']['validation_interval']
  return override


def test_a_failed_run_is_recorded_and_reported(tmp_path, tiny_shapes):
  broken = variants_lib.Variant(
      'broken', 'groie_maskrcnn_shapes',
      {'task': {'model': {'box_groie': {'pre_processing': 'conv4x4'}}}},
      'A variant whose config train.py refuses.')
  ran = sweep.run_sweep([broken], [0], str(tmp_path / 'work'),
                        str(tmp_path), 1, _tiny_override(tiny_shapes))
  assert ran == 1
  [record] = sweep.load_records(str(tmp_path))
  assert record['status'] == 'failed' and record['exit_code'] == 2
  assert any('conv4x4' in line for line in record['log_tail'])
  text = pathlib.Path(report.write(str(tmp_path), [broken])).read_text()
  assert '| `broken_seed0` | **failed** (exit 2) |' in text
  assert '| `broken` | none | - |' in text  # nothing averaged


def _records_on_disk(results_dir):
  return sorted(p.name for p in (results_dir / 'ablation' / 'runs').glob(
      '*.json')) if (results_dir / 'ablation' / 'runs').exists() else []


def test_a_killed_sweep_goes_on_without_redoing_a_finished_run(
    tmp_path, tiny_shapes):
  """1 variant x 2 seeds of a few steps; SIGTERM after the first run."""
  results = tmp_path / 'results'
  command = [sys.executable, str(_ROOT / 'ablation.py'),
             '--variants=sum', '--seeds=0,1', '--eval_interval=1',
             f'--work_dir={tmp_path / "work"}', f'--results_dir={results}',
             '--params_override=' + yaml.safe_dump(
                 _tiny_override(tiny_shapes))]
  sweep_process = subprocess.Popen(command, cwd=_ROOT,
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 600
  while not _records_on_disk(results) and time.monotonic() < deadline:
    assert sweep_process.poll() is None, sweep_process.stderr.read()[-3000:]
    time.sleep(1)
  assert _records_on_disk(results) == ['sum_seed0.json']
  first = (results / 'ablation' / 'runs' / 'sum_seed0.json').read_bytes()
  time.sleep(5)  # the second run has started
  sweep_process.send_signal(signal.SIGTERM)
  _, stderr = sweep_process.communicate(timeout=300)
  assert sweep_process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert 'Ablation stopped by SIGTERM' in stderr
  assert _records_on_disk(results) == ['sum_seed0.json']  # none for the stop

  again = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True,
                         timeout=1200)
  assert again.returncode == 0, again.stderr[-3000:]
  assert '1 run(s) to do now, 1 already recorded' in again.stderr
  assert _records_on_disk(results) == ['sum_seed0.json', 'sum_seed1.json']
  assert (results / 'ablation' / 'runs' / 'sum_seed0.json').read_bytes() == first
  log = (tmp_path / 'work' / 'sum_seed0' / 'train.log').read_text()
  assert log.count('\n=== ') == 1  # trained once
  for record in sweep.load_records(str(results)):
    assert record['status'] == 'ok', record.get('log_tail')
    assert [e['step'] for e in record['evaluations']] == [1, 2]
    assert record['training_seconds'] > 0
    assert record['machine'] == sweep.machine()
  text = (results / 'ablation.md').read_text()
  assert '| `sum` | 0,1 |' in text
  assert (results / 'ablation' / report.PLOT_NAME).stat().st_size > 10_000
  summaries = json.loads(
      (results / 'ablation' / 'ablation.json').read_text())['variants']
  assert [len(s['metrics']['AP']['values']) for s in summaries] == [2]


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
