"""What the command-line tools share: a user's mistake is one clear message.

`python -m groie_tf.train` (`train.py`), `export_saved_model.py`,
`predict.py`, `analyze_levels.py` and the TFRecord checker run their `main`
through `run`. An error a user can fix is a `groie_tf.errors.UserError`,
raised by the code that reads the user's input (an unknown experiment or
config key, a missing file, bad YAML, an invalid value, data that does not
fit the model, a checkpoint of another experiment; Model Garden's config
errors become one in `groie_tf.configs.loading`). It prints
`error: <what to do>` on stderr and exits with status 2, without a
traceback; `--traceback` shows it for debugging. Anything else is a bug
and keeps its traceback. A run stopped by SIGTERM or SIGINT, its
checkpoint saved, exits with 128 + the signal number, as a process killed
by it would, so that schedulers restart it.

Unless `--verbose_logs` is set, log lines known to be harmless are
dropped: Python's (`_HARMLESS`) by a logging filter, and those TensorFlow's
C++ runtime writes straight to the stderr file descriptor
(`_HARMLESS_NATIVE`) by a small filter process that stderr then goes
through; Orbit's per-loop dump of every loss and metric, which it both
logs and prints, is left to `groie_tf.training`'s one-line progress and
final table.
"""

import atexit
import logging as std_logging
import os
import subprocess
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from orbit import controller as orbit_controller
import tensorflow as tf

from groie_tf import stopping
from groie_tf.errors import UserError

_TRACEBACK = flags.DEFINE_boolean(
    'traceback', False, 'On an error, show the Python traceback too.')
_VERBOSE_LOGS = flags.DEFINE_boolean(
    'verbose_logs', False,
    'Keep the TensorFlow and Model Garden log lines known to be harmless.')

USER_ERROR_STATUS = 2

# Logged on every run, and harmless: they would bury what matters.
_HARMLESS = (
    'Failed to count model FLOPs',  # Model Garden's FLOP count, after training
    'Setting parallel_iterations > 1 has no effect',  # map_fn, eager
    'calling map_fn_v2 (from tensorflow.python.ops.map_fn) with dtype',
    # A SavedModel's RoIAlign gradient: serving asks for no gradient (one
    # line per function, 702 of the 733 lines predict.py printed).
    'with ops with unsaved custom gradients',
)
# Written by TensorFlow's C++ runtime to file descriptor 2 on healthy runs.
_HARMLESS_NATIVE = (
    # A tf.data iterator reaching the end of its data (every evaluation,
    # every file the checker reads).
    'Local rendezvous is aborting with status: OUT_OF_RANGE',
    # Grappler's cost model meeting an op it has no model for (RoIAlign's).
    'Error in PredictCost()',
    # The CUDA build of TensorFlow finding no GPU driver on a CPU machine.
    'failed call to cuInit',
)
# The filter process: copies its stdin to its stderr (the terminal or file
# the tool's stderr was), line by line, less lines holding an argument. It
# ignores SIGINT and SIGTERM, and sits in a session of its own, so that a
# Ctrl-C for the tool does not cut the tool's last lines; it ends when the
# last writer of the pipe (the tool, and any process it started) closes it.
_FILTER_PROGRAM = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
dropped = [text.encode() for text in sys.argv[1:]]
for line in sys.stdin.buffer:
  if not any(text in line for text in dropped):
    sys.stderr.buffer.write(line)
    sys.stderr.buffer.flush()
"""


def _orbit_log_without_outputs(message: str) -> None:
  """Orbit's controller log, minus its loss and metric dumps.

  Orbit's `_log` logs each message and prints it again on stdout; its
  'output:' messages are 10-30 lines of the dict `groie_tf.training`
  already reports in one line. Checkpoint and restore lines stay.
  """
  if 'output:' not in message:
    logging.info(message)


def user_message(error: BaseException) -> Optional[str]:
  """What to tell the user about `error`, or None if it is not theirs:
  only a `UserError` is (`groie_tf.errors`)."""
  return str(error) if isinstance(error, UserError) else None


class _DropHarmless(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in _HARMLESS)


def filter_native_stderr(dropped: Sequence[str] = _HARMLESS_NATIVE) -> None:
  """From now on, this process's file descriptor 2 goes through a filter
  process that drops the lines holding any of `dropped`.

  TensorFlow's C++ runtime writes to the descriptor itself, past Python's
  logging; a filter thread in this process would lose the last lines of a
  crash, a separate process does not. At exit the descriptor goes back to
  the real stderr and the filter is waited for (10 s at most, as long as
  processes this one started may hold the pipe), so that whoever reads
  the stderr of a finished process finds all of it.
  """
  original = os.dup(2)
  read_end, write_end = os.pipe()
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-c', _FILTER_PROGRAM, *dropped], stdin=read_end,
      stdout=subprocess.DEVNULL, start_new_session=True)
  os.close(read_end)
  sys.stderr.flush()
  os.dup2(write_end, 2)
  os.close(write_end)

  def restore():
    sys.stderr.flush()
    os.dup2(original, 2)  # closes this process's end of the pipe
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      pass

  atexit.register(restore)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`absl.app.run(main)`, user errors and stops turned into exit statuses."""

  def wrapped(argv):
    if not _VERBOSE_LOGS.value:
      logging.get_absl_handler().addFilter(_DropHarmless())
      tf.get_logger().addFilter(_DropHarmless())
      # Orbit has no switch for it; its module-level `_log` is the one place.
      orbit_controller._log = _orbit_log_without_outputs  # pylint: disable=protected-access
    try:
      main(argv)
    except stopping.StopRequested as stopped:
      sys.exit(128 + stopped.signal_number)
    except Exception as error:  # pylint: disable=broad-except
      message = user_message(error)
      if message is None or _TRACEBACK.value:
        raise
      print(f'error: {message}\n(--traceback shows where it was raised)',
            file=sys.stderr, flush=True)
      sys.exit(USER_ERROR_STATUS)

  # Before absl parses the flags: TensorFlow's CUDA build looks for a GPU
  # driver (and logs that it found none) when absl's app starts.
  try:
    flags.FLAGS(sys.argv, known_only=True)
  except flags.Error:
    pass  # app.run reports it
  if not _VERBOSE_LOGS.value:
    filter_native_stderr()
  app.run(wrapped)
