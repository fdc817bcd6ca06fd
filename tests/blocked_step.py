"""A step that blocks inside TensorFlow, under `SignalStop`'s handling.

    python -m tests.blocked_step

Prints `blocking` and then waits in a TensorFlow op (a dequeue from an
empty queue, with the GIL released, as a training step is) until the
process is ended: the main thread never returns to the interpreter, so
only what acts outside Python's signal handlers can answer a signal.
"""

import sys

import tensorflow as tf

from groie_tf import stopping


def main():
  queue = tf.queue.FIFOQueue(1, tf.float32)
  step = tf.function(queue.dequeue)
  stop = stopping.SignalStop(tf.distribute.get_strategy(),
                             saves_checkpoint=True)
  with stop.handling_signals():
    print('blocking', flush=True)
    step()


if __name__ == '__main__':
  sys.exit(main())
