"""SignalStop: the first SIGTERM or SIGINT asks for a stop, the second acts.

The end-to-end cases (a checkpoint at the current step, two workers that
stop together) are in test_training.py.
"""

import os
import signal
import sys
import time

import pytest
import tensorflow as tf

from groie_tf import stopping


def _deliver(signal_number):
  os.kill(os.getpid(), signal_number)
  time.sleep(0.05)  # Python runs the handler at its next bytecode


@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize('saves_checkpoint,promise', [
    (True, 'with a checkpoint'), (False, 'loop of evaluation steps')])
def test_a_signal_stops_at_the_next_loop_end(signal_number, saves_checkpoint,
                                             promise, caplog):
  stop = stopping.SignalStop(tf.distribute.get_strategy(), saves_checkpoint)
  previous = signal.getsignal(signal_number)
  with stop.handling_signals(), caplog.at_level('WARNING', logger='absl'):
    stop({'total_loss': 1.0})  # no signal yet: the loop goes on
    _deliver(signal_number)
    with pytest.raises(stopping.StopRequested) as raised:
      stop({'total_loss': 1.0})
    assert raised.value.signal_number == signal_number
  assert signal.getsignal(signal_number) is previous  # restored
  # The log says what will happen: an evaluation has no checkpoint to save.
  assert promise in caplog.text
  assert ('checkpoint' in caplog.text) == saves_checkpoint


def test_a_second_sigint_interrupts_at_once():
  stop = stopping.SignalStop(tf.distribute.get_strategy(),
                             saves_checkpoint=True)
  with stop.handling_signals():
    _deliver(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
      _deliver(signal.SIGINT)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
