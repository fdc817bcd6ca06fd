r"""Benchmarks GRoIE against Model Garden's stock aligner; prints a table.

    python -m benchmarks.run               # 2 CPU cores: about 5 minutes
    python -m benchmarks.run --sections=pooling --precisions=float32
    python -m benchmarks.run --tables_of=docs/benchmarks/cpu.json
    python -m benchmarks.run --sections=inference --precisions=float32 \
        --xla=off --output=docs/benchmarks/cpu_inference.json

Sections: `pooling` (RoIAlign over 4 levels vs the stock aligner), `layer`
(the paper's GRoIE vs the stock aligner and a plain conv of its size,
forward and forward+backward, FLOP rate and peak memory) and `end_to_end`
(a Mask R-CNN train step with and without GRoIE) run in float32,
mixed_bfloat16 and mixed_float16, with XLA off and on; on a CPU, not the
float16 gradients (see `Setup.why_not_backward`). `options` times each row
of the paper's Tables I-IV, and `ablation` a training step of each variant
of `ablation.py`, `gcnet` the R50 and R101 backbones with and without
GCNet's context blocks, `grid` Grid R-CNN's grid branch per RoI with
either extractor, and `gradient` RoIAlign's feature gradient by the C++
kernel, its sparse fallback and TensorFlow's racy kernel, in float32.
`inference` (not among the default sections: 18 minutes on 2 CPU
cores) times one image through the COCO Mask R-CNN stage by stage, with
the stock aligners and with GRoIE, at `--inference_sizes`. Every time is the
median of `--repeats` rounds after `--warmup` rounds, and `ratio` divides it
by its section's baseline (the stock aligner) timed in the same rounds.

Writes the rows with the date and the device to `--output` (default
`docs/benchmarks/<device>.json`). docs/performance.md reads them.
"""

import os

# Before TensorFlow loads: keep its C++ info lines out of the table.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import datetime
import json
import platform
import tempfile
from typing import Tuple

from absl import app
from absl import flags
import tensorflow as tf
import tf_keras

from benchmarks import ablation
from benchmarks import end_to_end
from benchmarks import gcnet
from benchmarks import gradient
from benchmarks import grid
from benchmarks import inference
from benchmarks import layer
from benchmarks import options
from benchmarks import pooling
from benchmarks import timing

SECTIONS = {'pooling': pooling, 'layer': layer, 'end_to_end': end_to_end,
            'options': options, 'ablation': ablation, 'gcnet': gcnet,
            'grid': grid, 'gradient': gradient, 'inference': inference}
# Run unless --sections names others.
DEFAULT_SECTIONS = [name for name in SECTIONS if name != 'inference']
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')

_SECTIONS = flags.DEFINE_list(
    'sections', DEFAULT_SECTIONS,
    f'Sections to run, of {", ".join(SECTIONS)}.')
_PRECISIONS = flags.DEFINE_list('precisions', list(PRECISIONS),
                                'Keras mixed-precision policies.')
_XLA = flags.DEFINE_list('xla', ['off', 'on'], 'XLA settings: off, on.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed rounds first.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds (median).')
_LAYER_ROIS = flags.DEFINE_integer(
    'layer_rois', None, 'RoIs per image of the layer section; default 512 '
    'on a GPU (the box branch of Model Garden), 64 on a CPU, where 512 '
    'takes over a minute per configuration.')
_E2E_EXPERIMENT = flags.DEFINE_enum(
    'e2e_experiment', None, list(end_to_end.EXPERIMENTS),
    'Experiment of the end-to-end section: its GRoIE version against its '
    'stock aligners. Default: coco on a GPU, shapes on a CPU.')
_E2E_IMAGE_SIZE = flags.DEFINE_integer(
    'e2e_image_size', None, 'Input side; default 1024 on a GPU, 256 on a CPU.')
_E2E_BATCH_SIZE = flags.DEFINE_integer('e2e_batch_size', 2, 'Images a step.')
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', 1024, 'Input side whose FPN shapes the pooling and layer '
    'sections use.')
_CHANNELS = flags.DEFINE_integer('channels', 256, 'FPN channels.')
_INFERENCE_SIZES = flags.DEFINE_list(
    'inference_sizes', [f'{h}x{w}' for h, w in inference.INPUT_SIZES],
    'HEIGHTxWIDTH inputs of the inference section.')
_TABLES_OF = flags.DEFINE_string(
    'tables_of', None, 'Print the tables of this JSON report and exit.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON file written.')


@dataclasses.dataclass
class Setup:
  """What every section needs: sizes, the device and the timer."""
  device: str
  work_dir: str
  layer_rois: int
  e2e_experiment: str
  e2e_image_size: int
  e2e_batch_size: int
  xla: Tuple[bool, ...]
  warmup: int
  repeats: int
  image_size: int  # the pooling and layer sections' FPN is of this input
  channels: int
  inference_sizes: Tuple[Tuple[int, int], ...] = inference.INPUT_SIZES
  batch_size: int = 2

  def compute_dtype(self, precision):
    return tf_keras.mixed_precision.Policy(precision).compute_dtype

  def time(self, functions):
    return timing.median_seconds(functions, self.warmup, self.repeats)

  def why_not_backward(self, precision):
    """Why training at `precision` is not timed here; None if it is."""
    if precision == 'mixed_float16' and self.device.startswith('CPU'):
      # TF's CPU float16 Conv2D gradients are Eigen's generic kernels: the
      # gradient of one [64,7,7,256] 5x5 conv took 16.8 s, against 50 ms in
      # float32 (docs/performance.md). mixed_float16 is a GPU policy.
      return 'float16 conv gradients have no fast CPU kernel'
    return None


def _device_description(device):
  if device.startswith('GPU'):
    details = tf.config.experimental.get_device_details(
        tf.config.list_physical_devices('GPU')[0])
    return details.get('device_name', 'GPU')
  model = platform.machine()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f
               if line.startswith('model name')]
    model = names[0] if names else model
  return f'{model} CPU, {os.cpu_count()} cores'


def _format(value):
  if isinstance(value, bool):
    return 'on' if value else 'off'
  if isinstance(value, float):
    return f'{value:.3g}' if abs(value) < 1000 else f'{value:.0f}'
  return '-' if value is None else str(value)


def markdown_tables(rows):
  """One Markdown table a section; its columns are the keys of its rows."""
  lines = []
  for section in dict.fromkeys(row['section'] for row in rows):
    chosen = [row for row in rows if row['section'] == section]
    keys = [k for k in dict.fromkeys(k for row in chosen for k in row)
            if k != 'section']
    lines += [f'\n### {section}\n', '| ' + ' | '.join(keys) + ' |',
              '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(_format(row.get(k)) for k in keys) + ' |'
              for row in chosen]
  return '\n'.join(lines)


def main(argv):
  del argv
  if _TABLES_OF.value:
    with open(_TABLES_OF.value) as f:
      report = json.load(f)
    print(f'{report["device"]}, {report["date"]}, TensorFlow '
          f'{report["tensorflow"]}\n{markdown_tables(report["rows"])}')
    return
  unknown = set(_SECTIONS.value) - set(SECTIONS)
  unknown |= set(_PRECISIONS.value) - set(PRECISIONS)
  unknown |= set(_XLA.value) - {'on', 'off'}
  if unknown:
    raise app.UsageError(f'Unknown section, precision or XLA setting: '
                         f'{sorted(unknown)}.')
  tf.get_logger().setLevel('ERROR')  # The profiler's deprecation notices.
  on_gpu = bool(tf.config.list_physical_devices('GPU'))
  device = 'GPU:0' if on_gpu else 'CPU:0'
  setup = Setup(
      device=device, work_dir=tempfile.mkdtemp(prefix='groie_benchmarks_'),
      layer_rois=_LAYER_ROIS.value or (512 if on_gpu else 64),
      e2e_experiment=_E2E_EXPERIMENT.value or ('coco' if on_gpu else 'shapes'),
      e2e_image_size=_E2E_IMAGE_SIZE.value or (1024 if on_gpu else 256),
      e2e_batch_size=_E2E_BATCH_SIZE.value,
      xla=tuple(setting == 'on' for setting in _XLA.value),
      warmup=_WARMUP.value, repeats=_REPEATS.value,
      image_size=_IMAGE_SIZE.value, channels=_CHANNELS.value,
      inference_sizes=tuple(tuple(int(v) for v in size.split('x'))
                            for size in _INFERENCE_SIZES.value))
  rows = []
  started = datetime.datetime.now()
  for precision in _PRECISIONS.value:
    tf_keras.mixed_precision.set_global_policy(precision)
    for section in _SECTIONS.value:
      print(f'[{datetime.datetime.now() - started}] {section}, {precision}',
            flush=True)
      rows += SECTIONS[section].run(setup, precision)
  tf_keras.mixed_precision.set_global_policy('float32')
  print(markdown_tables(rows))
  report = {
      'date': started.date().isoformat(),
      'device': _device_description(device),
      'tensorflow': tf.__version__,
      'seconds': (datetime.datetime.now() - started).total_seconds(),
      'setup': {k: v for k, v in dataclasses.asdict(setup).items()
                if k != 'work_dir'},
      'rows': rows,
  }
  output = _OUTPUT.value or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
      'benchmarks', f'{"gpu" if on_gpu else "cpu"}.json')
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with open(output, 'w') as f:
    json.dump(report, f, indent=1)
  print(f'\nWrote {output} ({report["seconds"]:.0f} s).')


if __name__ == '__main__':
  app.run(main)
