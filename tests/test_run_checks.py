"""What a run checks before it builds its model, and what it tells the user
while it runs: frozen backbones without a checkpoint, GPUs that are not
there, the precision per device, data that does not match, evaluation
progress. Each test failed before the check it covers existed."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from official.common import distribute_utils

from groie_tf import precision
from groie_tf import training
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.configs import loading
from groie_tf.data import shapes
from groie_tf.errors import UserError
from tests.tiny_experiment import tiny_own_data_experiment

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PAPER = [os.path.join(_ROOT, 'configs', 'paper', name) for name in (
    'base_1x_8gpu.yaml', 'table5_mask_rcnn_groie.yaml')]


def _paper_config(override=''):
  return loading.load_experiment('groie_maskrcnn_resnetfpn_coco', _PAPER,
                                 override)


def test_a_frozen_backbone_without_a_checkpoint_is_refused():
  """The paper's configs freeze the stem and stage 1 and the batch norms'
  statistics: without task.init_checkpoint they would train frozen at
  their random initialisation."""
  with pytest.raises(UserError) as raised:
    groie_config.check_frozen_backbone_initialized(_paper_config().task)
  message = str(raised.value)
  for text in ('task.model.frozen_stages=1 and task.model.norm_eval=true',
               'task.init_checkpoint', 'init_checkpoint_modules=backbone',
               'task.model.frozen_stages=-1,task.model.norm_eval=false',
               'task.allow_random_frozen_backbone=true'):
    assert text in message, text
  # Model Garden's freeze_backbone is the same trap.
  with pytest.raises(UserError, match=r'^task.freeze_backbone=true freeze'):
    groie_config.check_frozen_backbone_initialized(_paper_config(
        'task.model.frozen_stages=-1,task.model.norm_eval=false,'
        'task.freeze_backbone=true').task)
  # A checkpoint that restores no backbone is no way out.
  with pytest.raises(UserError):
    groie_config.check_frozen_backbone_initialized(_paper_config(
        "task.init_checkpoint=/ckpt,task.init_checkpoint_modules=decoder").task)
  for way_out in (
      'task.init_checkpoint=/ckpt,task.init_checkpoint_modules=backbone',
      'task.init_checkpoint=/ckpt,task.init_checkpoint_modules=all',
      'task.model.frozen_stages=-1,task.model.norm_eval=false',
      'task.allow_random_frozen_backbone=true'):
    groie_config.check_frozen_backbone_initialized(_paper_config(way_out).task)


def test_training_refuses_the_frozen_random_backbone_before_building_it(
    tmp_path):
  with pytest.raises(UserError, match='task.model.frozen_stages=1'):
    training.run(_paper_config('runtime.num_gpus=0'), 'train',
                 str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing was built nor written


def _recorded_strategies(monkeypatch, visible_gpus):
  """What `build_strategy` asks Model Garden for, on a machine faked to
  show `visible_gpus` GPUs: a list that each call appends its arguments to."""
  built = []

  def fake_strategy(**kwargs):
    built.append(kwargs)
    return tf.distribute.get_strategy()

  monkeypatch.setattr(distribute_utils, 'get_distribution_strategy',
                      fake_strategy)
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: [f'gpu{i}' for i in range(
                          visible_gpus)])
  return built


def test_strategy_defaults_to_every_visible_gpu(monkeypatch):
  built = _recorded_strategies(monkeypatch, visible_gpus=3)
  runtime = loading.load_experiment('maskrcnn_shapes').runtime
  training.build_strategy(runtime)
  assert built[-1]['num_gpus'] == 3
  assert built[-1]['distribution_strategy'] == 'mirrored'
  runtime.num_gpus = 1  # an explicit count is kept
  training.build_strategy(runtime)
  assert built[-1]['num_gpus'] == 1


@pytest.mark.parametrize('strategy', ['mirrored', 'one_device'])
def test_more_gpus_than_visible_are_refused_before_the_strategy(
    monkeypatch, strategy):
  built = _recorded_strategies(monkeypatch, visible_gpus=2)
  runtime = _paper_config().runtime  # num_gpus: 8
  runtime.distribution_strategy = strategy
  with pytest.raises(UserError, match=(
      r'^runtime.num_gpus is 8, but TensorFlow sees 2 GPU\(s\) on this '
      r'machine: set runtime.num_gpus=0 .* or a count up to 2\.')):
    training.build_strategy(runtime)
  assert not built
  runtime.num_gpus = 2
  training.build_strategy(runtime)
  assert built[-1]['num_gpus'] == 2


@pytest.mark.parametrize('requested, kind, flags, capabilities, expected', [
    ('auto', 'CPU', {'avx2', 'fma'}, (), 'float32'),
    ('auto', 'CPU', {'avx2', 'avx512f', 'avx512_bf16'}, (), 'bfloat16'),
    ('auto', 'CPU', {'amx_bf16', 'amx_tile'}, (), 'bfloat16'),
    ('auto', 'CPU', {'avx512f'}, (), 'float32'),  # AVX-512 without BF16
    ('auto', 'GPU', (), [(7, 0), (7, 0)], 'float32'),  # V100
    ('auto', 'GPU', (), [(7, 5)], 'float32'),  # T4
    ('auto', 'GPU', (), [(8, 0), (9, 0)], 'bfloat16'),  # A100, H100
    ('auto', 'GPU', (), [(8, 6), (7, 5)], 'float32'),  # one old GPU
    ('auto', 'TPU', (), (), 'bfloat16'),
    ('bfloat16', 'CPU', {'avx2'}, (), 'bfloat16'),  # as written
    ('float16', 'GPU', (), [(7, 0)], 'float16'),
    ('float32', 'GPU', (), [(9, 0)], 'float32'),
    (None, 'GPU', (), [(9, 0)], 'float32'),  # Model Garden's default
])
def test_auto_precision_is_chosen_per_device(requested, kind, flags,
                                             capabilities, expected):
  dtype, reason = precision.choose(requested, kind, flags, capabilities)
  assert dtype == expected
  assert reason.startswith('auto: ' if requested == 'auto' else
                           'runtime.mixed_precision_dtype')


def test_coco_experiments_choose_their_precision_and_paper_rows_say_float32():
  coco = loading.load_experiment('groie_maskrcnn_resnetfpn_coco')
  assert coco.runtime.mixed_precision_dtype == precision.AUTO
  assert coco.trainer.validation_steps == -1  # the whole validation set
  assert _paper_config().runtime.mixed_precision_dtype == 'float32'
  with pytest.raises(UserError, match=r"mixed_precision_dtype must be one "
                                      r"of float32, bfloat16, float16, auto"):
    loading.load_experiment('groie_maskrcnn_shapes', (),
                                 'runtime.mixed_precision_dtype=bf16')


def test_evaluation_progress_logs_steps_rate_and_eta(monkeypatch):
  clock = iter([100.0, 150.0, 170.0, 230.0, 250.0])
  monkeypatch.setattr(training.time, 'monotonic', lambda: next(clock))
  lines = []
  monkeypatch.setattr(training.logging, 'info',
                      lambda message, *args: lines.append(message % args))
  progress = training.EvaluationProgress(total_steps=5, interval_seconds=60)
  progress.begin()
  assert progress.active
  for _ in range(5):
    progress.step()
  progress.end()
  assert not progress.active
  # Steps end at 100, 150, 170, 230 and 250 s: a line at the first, then
  # 60 s after the last line (170, 230), and at the last.
  assert lines == [
      'evaluation step 1/5 (20%) | warming up | ETA unknown',
      'evaluation step 3/5 (60%) | 35.00 s/step | ETA 0:01:10',
      'evaluation step 4/5 (80%) | 43.33 s/step | ETA 0:00:43',
      'evaluation step 5/5 (100%) | 37.50 s/step | ETA 0:00:00',
      'Evaluation: 5 step(s) run; computing the COCO metrics.']


def test_a_pattern_matching_nothing_is_named_before_the_model(tiny_shapes,
                                                              tmp_path):
  typo = os.path.join(shapes.dataset_dir(tiny_shapes), 'trian-*')
  config = tiny_own_data_experiment(tiny_shapes, train_data={'input_path': typo})
  with pytest.raises(UserError, match=re.escape(
      f"task.train_data.input_path '{typo}' matches no file.")):
    training.run(config, 'train', str(tmp_path / 'model'))


def test_records_of_other_images_than_the_annotation_file_are_refused(
    tiny_shapes, tmp_path):
  """pycocotools said 'Results do not correspond to the current dataset'
  only after the whole evaluation, naming neither file."""
  directory = shapes.dataset_dir(tiny_shapes)
  with open(os.path.join(directory, 'instances_val.json')) as f:
    annotations = json.load(f)
  for image in annotations['images']:  # other images: ids 101..
    image['id'] += 100
  other = tmp_path / 'other.json'
  other.write_text(json.dumps(annotations))
  config = tiny_own_data_experiment(tiny_shapes, annotation_file=str(other))
  with pytest.raises(UserError) as raised:
    training.run(config, 'eval', str(tmp_path / 'model'))
  message = str(raised.value)
  assert message.startswith(
      f'4 of the 4 validation records (task.validation_data.input_path='
      f"'{directory}/val-*') do not match the images of "
      f"task.annotation_file='{other}' (image 1: not in the annotation file")
  # Same ids, other sizes: another data set.
  for image in annotations['images']:
    image['id'] -= 100
    image['height'] = 480
  other.write_text(json.dumps(annotations))
  with pytest.raises(UserError, match=(
      r'image 1: 128x128 in the records, 480x128 in the annotation file')):
    training.run(config, 'eval', str(tmp_path / 'model'))


def _checker(*flags):
  return subprocess.run(
      [sys.executable, '-m', 'groie_tf.data.check_tfrecords', *flags],
      cwd=_ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=_ROOT, TF_CPP_MIN_LOG_LEVEL='0'))


def test_the_checker_reports_in_one_line_and_keeps_quiet_on_good_data(
    tiny_shapes, tmp_path):
  from tests.damaged_records import truncated_jpeg_copy  # pylint: disable=g-import-not-at-top
  source, = glob.glob(os.path.join(shapes.dataset_dir(tiny_shapes), 'val-*'))
  good = _checker(f'--pattern={source}', '--num_classes=5')
  assert good.returncode == 0, good.stderr[-3000:]
  assert good.stdout.strip() == f'4 valid records in {source}'
  # TensorFlow's C++ lines of a healthy read: filtered.
  assert 'Local rendezvous' not in good.stderr
  assert 'failed call to cuInit' not in good.stderr

  damaged = str(tmp_path / 'damaged.tfrecord')
  truncated_jpeg_copy(source, damaged, index=2)
  for flags, problem in (
      ([f'--pattern={source}', '--num_classes=3'],
       rf'{source}: record 0 is malformed: class ids \[1, 4\] do not fit '
       'num_classes=3'),
      ([f'--pattern={damaged}'],
       f'{damaged}: record 2 is malformed: jpeg::Uncompress failed')):
    result = _checker(*flags)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.match('error: ' + problem, errors[0]), errors


def test_harmless_native_lines_are_dropped_unless_verbose():
  """TensorFlow's C++ runtime writes to file descriptor 2 itself; the
  tools send it through a filter (`cli.filter_native_stderr`)."""
  program = (
      'import os\n'
      'from groie_tf import cli\n'
      'def main(_):\n'
      '  for line in (b"I local_rendezvous.cc:407] Local rendezvous is '
      'aborting with status: OUT_OF_RANGE: End of sequence\\n",\n'
      '               b"E op_level_cost_estimator.cc] Error in PredictCost() '
      'for the op: CropAndResize\\n",\n'
      '               b"E cuda_platform.cc:51] failed call to cuInit: '
      'UNKNOWN ERROR (303)\\n",\n'
      '               b"E jpeg_mem.cc:329] Premature end of JPEG data\\n"):\n'
      '    os.write(2, line)\n'
      'cli.run(main)\n')

  def stderr(*flags):
    result = subprocess.run([sys.executable, '-c', program, *flags],
                            cwd=_ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ,
                                                  PYTHONPATH=_ROOT))
    assert result.returncode == 0, result.stderr
    return result.stderr

  quiet, verbose = stderr(), stderr('--verbose_logs')
  for harmless in ('Local rendezvous', 'PredictCost', 'cuInit'):
    assert harmless not in quiet and harmless in verbose
  # What may matter goes through.
  assert 'Premature end of JPEG data' in quiet


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
