"""SignalStop: the first SIGTERM or SIGINT asks for a stop, the second acts.

The end-to-end cases (a checkpoint at the current step, two workers that
stop together) are in test_training.py.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from groie_tf import stopping

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _deliver(signal_number, stop):
  """Sends the signal to this process; returns once `stop` has seen it
  (its watcher thread reads it from a pipe)."""
  os.kill(os.getpid(), signal_number)
  deadline = time.monotonic() + 10
  while stop._signal_number is None and time.monotonic() < deadline:  # pylint: disable=protected-access
    time.sleep(0.01)


@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize('saves_checkpoint,promise', [
    (True, 'with a checkpoint'), (False, 'loop of evaluation steps')])
def test_a_signal_stops_at_the_next_loop_end(signal_number, saves_checkpoint,
                                             promise, caplog):
  stop = stopping.SignalStop(tf.distribute.get_strategy(), saves_checkpoint)
  previous = signal.getsignal(signal_number)
  with stop.handling_signals(), caplog.at_level('WARNING', logger='absl'):
    stop({'total_loss': 1.0})  # no signal yet: the loop goes on
    _deliver(signal_number, stop)
    with pytest.raises(stopping.StopRequested) as raised:
      stop({'total_loss': 1.0})
    assert raised.value.signal_number == signal_number
  assert signal.getsignal(signal_number) is previous  # restored
  # The log says what will happen: an evaluation has no checkpoint to save.
  assert promise in caplog.text
  assert ('checkpoint' in caplog.text) == saves_checkpoint


def _wait_for(path, text, timeout):
  """Waits until the file at `path` holds `text`."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if text in path.read_text():
      return
    time.sleep(0.1)
  raise AssertionError(f'no {text!r} within {timeout} s:\n'
                       + path.read_text()[-3000:])


@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT])
def test_signals_act_while_a_step_blocks_inside_tensorflow(signal_number,
                                                          tmp_path):
  """The first signal is acknowledged at once and the second ends the
  process at once, while the main thread is inside a TensorFlow op that
  never returns (a long step): Python's handlers alone did neither."""
  name = signal.Signals(signal_number).name
  out, err = tmp_path / 'stdout', tmp_path / 'stderr'
  with open(out, 'w') as stdout, open(err, 'w') as stderr:
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-m', 'tests.blocked_step'], cwd=_ROOT,
        stdout=stdout, stderr=stderr, env=dict(os.environ, PYTHONPATH=_ROOT))
  try:
    _wait_for(out, 'blocking', timeout=120)
    time.sleep(1)  # into the op
    process.send_signal(signal_number)
    _wait_for(err, f'{name} received: stopping at the end', timeout=10)
    time.sleep(1)
    assert process.poll() is None  # the first signal does not stop the step
    process.send_signal(signal_number)
    assert process.wait(timeout=10) == 128 + signal_number
    assert f'{name} received again: exiting now' in err.read_text()
  finally:
    process.kill()
    process.wait()


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
