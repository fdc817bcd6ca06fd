"""The compute precision of a run: `runtime.mixed_precision_dtype`, or
'auto' to choose it for the devices the run uses.

Model Garden's COCO experiments ask for `bfloat16`, TPUs' native type. A
device without bfloat16 arithmetic emulates it: on a 2-core EPYC without
AVX-512 BF16, the first step of `groie_maskrcnn_resnetfpn_coco` at 512 x
512 had not finished after 9.5 minutes where a float32 step took about
90 s. The COCO experiments here ask for 'auto' instead:

- TPU: bfloat16;
- GPU: bfloat16 if every GPU has compute capability 8.0 or more (Ampere
  and newer), else float32 (V100 is 7.0, T4 7.5);
- CPU: bfloat16 if it has AVX-512 BF16 or AMX (the `avx512_bf16` or
  `amx_bf16` flag of /proc/cpuinfo), else float32.

Any other value is kept as written. `groie_tf.training` logs the choice and
its reason at start.
"""

import os
from typing import Iterable, Optional, Sequence, Tuple

import tensorflow as tf

AUTO = 'auto'
# Model Garden's values (None: its default, float32) and ours.
VALUES = (None, '', 'float32', 'bfloat16', 'float16', AUTO)
_CPU_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
_AMPERE = (8, 0)


def choose(requested: Optional[str], device_kind: str,
           cpu_flags: Iterable[str] = (),
           gpu_capabilities: Sequence[Tuple[int, int]] = ()
           ) -> Tuple[str, str]:
  """The dtype to compute in, and why.

  Args:
    requested: `runtime.mixed_precision_dtype`.
    device_kind: 'TPU', 'GPU' or 'CPU': what the replicas run on.
    cpu_flags: the CPU's feature flags (/proc/cpuinfo).
    gpu_capabilities: (major, minor) compute capability of each GPU.

  Returns:
    ('float32' | 'bfloat16' | 'float16', a sentence fragment saying why).
  """
  if requested != AUTO:
    return (requested or 'float32',
            'runtime.mixed_precision_dtype says so' if requested else
            'runtime.mixed_precision_dtype is unset')
  if device_kind == 'TPU':
    return 'bfloat16', 'auto: TPUs compute bfloat16 natively'
  if device_kind == 'GPU':
    oldest = min(gpu_capabilities, default=(0, 0))
    if oldest >= _AMPERE:
      return 'bfloat16', (f'auto: every GPU has compute capability '
                          f'{oldest[0]}.{oldest[1]} or more, with native '
                          'bfloat16')
    return 'float32', (f'auto: a GPU of compute capability {oldest[0]}.'
                       f'{oldest[1]} has no native bfloat16 (8.0, Ampere, '
                       'and newer have)')
  found = sorted(set(cpu_flags) & set(_CPU_BF16_FLAGS))
  if found:
    return 'bfloat16', f'auto: this CPU computes bfloat16 natively ({found[0]})'
  return 'float32', ('auto: this CPU has no native bfloat16 (neither '
                     'AVX-512 BF16 nor AMX), which it would emulate slowly')


def cpu_flags() -> frozenset:
  """The feature flags of this machine's CPU; empty where /proc has none."""
  if not os.path.exists('/proc/cpuinfo'):
    return frozenset()
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('flags'):
        return frozenset(line.split(':', 1)[1].split())
  return frozenset()


def worker_devices(strategy: tf.distribute.Strategy) -> Tuple[str, ...]:
  """The devices `strategy` runs its replicas on; () where it lists none."""
  try:
    return tuple(strategy.extended.worker_devices)
  except (AttributeError, RuntimeError):  # not every strategy lists them
    return ()


def for_strategy(requested: Optional[str],
                 strategy: tf.distribute.Strategy) -> Tuple[str, str]:
  """`choose` for the devices of `strategy` on this machine."""
  devices = ' '.join(worker_devices(strategy))
  if isinstance(strategy, tf.distribute.TPUStrategy) or 'TPU' in devices:
    return choose(requested, 'TPU')
  if 'GPU' in devices:  # every visible GPU, though the run may use fewer
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get(
            'compute_capability', (0, 0))
        for gpu in tf.config.list_physical_devices('GPU')]
    return choose(requested, 'GPU', gpu_capabilities=capabilities)
  return choose(requested, 'CPU', cpu_flags=cpu_flags())
