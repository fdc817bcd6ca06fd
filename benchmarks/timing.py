"""Median timings, interleaved against a baseline, and peak memory."""

import statistics
import time
from typing import Callable, Dict, Optional

import tensorflow as tf


def _block(result):
  """Waits for `result`: reading one element waits for the whole op."""
  for tensor in tf.nest.flatten(result):
    if isinstance(tensor, tf.Tensor):
      tensor.numpy()


def median_seconds(functions: Dict[str, Callable[[], object]],
                   warmup: int, repeats: int) -> Dict[str, float]:
  """Median wall time of each function, measured round-robin.

  Each round times every function once, in turn, so that a slow spell of a
  shared machine hits all of them alike; ratios between functions of one
  call are therefore fairer than ratios between separate runs. The first
  `warmup` rounds (tracing, XLA compilation, allocator growth) are dropped.

  Each function must return tensors that depend on all of its work (a
  scalar slice of the output is enough: TF does not skip parts of an op).
  """
  times = {name: [] for name in functions}
  for round_index in range(warmup + repeats):
    for name, function in functions.items():
      start = time.perf_counter()
      _block(function())
      if round_index >= warmup:
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def peak_bytes(function: Callable[[], object], device: str) -> Optional[int]:
  """Peak allocator bytes above the level before one call of `function`.

  TF's allocator statistics: what the call holds at its highest point,
  inputs and variables excluded. None where the device keeps no statistics.
  """
  try:
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)['current']
    _block(function())
    return tf.config.experimental.get_memory_info(device)['peak'] - before
  except (ValueError, tf.errors.OpError):
    return None


def megabytes(num_bytes: Optional[int]) -> Optional[float]:
  return None if num_bytes is None else num_bytes / 2**20
