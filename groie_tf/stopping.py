"""Stopping a run on SIGTERM or SIGINT without losing its steps.

Schedulers and preemptible machines send SIGTERM, then kill the process
some seconds later; a person presses Ctrl-C. Model Garden dies at once on
either, losing every step since the last interval checkpoint (up to
`trainer.checkpoint_interval`). Here the first signal asks the run to stop:
at the end of the current loop of `trainer.steps_per_loop` steps, every
worker stops together, and `groie_tf.training.run` saves a checkpoint at
that step. A second signal ends the process at once, without a checkpoint,
with status 128 + the signal's number.

A Python signal handler runs only when the main thread returns to the
interpreter, which a loop of steps (one TensorFlow call, minutes long on a
CPU) does not do until it ends: a handler alone neither acknowledges the
first signal nor honours the second. So the signals are also written, by
CPython's C-level handler, to a pipe (`signal.set_wakeup_fd`) that a
watcher thread reads while TensorFlow runs: it logs the first signal at
once and ends the process on the second (`os._exit`). The stop itself still
comes at the end of the loop.
"""

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Optional

from absl import logging
import tensorflow as tf

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def watching_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
  """Calls `on_signal(signal_number)` for each SIGTERM and SIGINT while the
  block runs, from a watcher thread, even while the main thread is inside
  TensorFlow or waiting for a child process; then restores the previous
  handlers. Main thread only (Python delivers signals there); elsewhere
  the block runs unwatched."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  read_end, write_end = os.pipe()
  os.set_blocking(write_end, False)  # set_wakeup_fd requires it
  previous = {s: signal.getsignal(s) for s in _SIGNALS}
  for s in _SIGNALS:
    # The C-level handler that Python installs with it writes to the pipe;
    # the Python-level one has nothing left to do.
    signal.signal(s, lambda signal_number, frame: None)
  previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

  def watch():
    while True:
      received = os.read(read_end, 64)
      if not received:
        return  # the write end closed: the block is over
      for signal_number in received:
        if signal_number in _SIGNALS:
          on_signal(signal_number)

  watcher = threading.Thread(target=watch, name='signal_watcher', daemon=True)
  watcher.start()
  try:
    yield
  finally:
    signal.set_wakeup_fd(previous_fd)
    for s, handler in previous.items():
      signal.signal(s, handler)
    os.close(write_end)
    watcher.join()
    os.close(read_end)


def exit_now(signal_number: int) -> None:
  """Ends the process at once with 128 + `signal_number`, logs flushed: a
  second signal's answer."""
  logging.warning('%s received again: exiting now, without a checkpoint.',
                  signal.Signals(signal_number).name)
  logging.flush()
  sys.stderr.flush()
  os._exit(128 + signal_number)  # pylint: disable=protected-access


class StopRequested(Exception):
  """Raised out of the Orbit loop once every worker has seen a stop request."""

  def __init__(self, signal_number: int):
    self.signal_number = signal_number
    super().__init__(f'stopped by {signal.Signals(signal_number).name}')


class SignalStop:
  """An Orbit train and eval action: raises StopRequested after a signal.

  Under `MultiWorkerMirroredStrategy` the workers agree first (a sum over
  workers of "got SIGTERM, got SIGINT", one tiny all-reduce per loop): a
  scheduler may signal one machine, and all must stop at the same step to
  save together.

  Example:

    stop = SignalStop(strategy, saves_checkpoint=True)
    with stop.handling_signals():
      ...  # run Orbit with `stop` among the train and eval actions
  """

  def __init__(self, strategy: tf.distribute.Strategy,
               saves_checkpoint: bool):
    """`saves_checkpoint`: whether the caller saves one on the stop (a
    training run does; an evaluation has nothing to save). It only sets
    what the first signal's log line promises."""
    self._strategy = strategy
    self._saves_checkpoint = saves_checkpoint
    self._signal_number: Optional[int] = None
    self._multi_worker = isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if self._multi_worker:
      self._agree = tf.function(self._sum_over_workers)

  def handling_signals(self):
    """A context manager: the signals are watched for the block (main
    thread only), then the previous handlers come back."""
    return watching_signals(self._on_signal)

  def _on_signal(self, signal_number: int) -> None:
    name = signal.Signals(signal_number).name
    if self._signal_number is not None:
      exit_now(signal_number)
    self._signal_number = signal_number
    if self._saves_checkpoint:
      logging.warning('%s received: stopping at the end of this loop of '
                      'steps with a checkpoint (send %s again to stop at '
                      'once, without one).', name, name)
    else:
      logging.warning('%s received: stopping at the end of this loop of '
                      'evaluation steps (send %s again to stop at once).',
                      name, name)

  def _sum_over_workers(self, value: tf.Tensor) -> tf.Tensor:
    per_replica = self._strategy.run(tf.identity, args=(value,))
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                 axis=None)

  def __call__(self, output: Any) -> None:
    del output
    received = [float(s == self._signal_number) for s in _SIGNALS]
    if self._multi_worker:  # how many workers got each signal
      received = self._agree(tf.constant(received, tf.float32)).numpy()
    for signal_number, count in zip(_SIGNALS, received):
      if count:
        raise StopRequested(signal_number)
