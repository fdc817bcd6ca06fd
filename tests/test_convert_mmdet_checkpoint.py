"""convert_mmdet_checkpoint.py: mmdetection checkpoints into groie-tf.

Fixtures (`tests/fixtures/mmdet/`, written by PyTorch and mmdetection
3.3.0 through `tools/mmdet_reference/make_checkpoints.py`): one dict saved
in torch's two formats; the reduced-width Mask R-CNN + GRoIE of
`mask_rcnn_groie.npz` saved as a published checkpoint (legacy format,
`meta` as mmdetection 2.x wrote it); the state-dict names and shapes of the
nine published models at full width.

Mutations that fail here: a tensor read without its strides or storage
offset; storages read in pickle order rather than the file's key list;
meta's foreign classes imported (the os.system pickle runs); recognition
ignoring GC blocks or depth; the COCO columns in another order; the
converter keeping Model Garden's attention arithmetic (mmcv_compat false);
a class-count warm start restoring a class layer, or skipping another.
"""

import os
import pickle
import sys

import numpy as np
import pytest

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading
from groie_tf.conversion import convert
from groie_tf.conversion import published
from groie_tf.conversion import torch_pickle
from groie_tf.errors import CheckpointError
from groie_tf.modeling import class_change
from tests import mmdet_published
from tests import mmdet_stages

FIXTURES = mmdet_stages.FIXTURES
REDUCED = mmdet_published.REDUCED
REDUCED_PTH = mmdet_published.REDUCED_PTH
PUBLISHED_SHAPES = mmdet_published.published_shapes()


# --- reading .pth without PyTorch -------------------------------------------

@pytest.mark.parametrize('form', ['legacy', 'zip'])
def test_reads_what_torch_saved_in_either_format(form):
  content = torch_pickle.load(os.path.join(FIXTURES,
                                           f'torch_pickle_{form}.pth'))
  with np.load(os.path.join(FIXTURES, 'torch_pickle.npz')) as data:
    want = dict(data)
  state_dict = content['state_dict']
  assert sorted(state_dict) == sorted(want)
  for key, value in want.items():
    got = state_dict[key]
    assert got.dtype == value.dtype and got.shape == value.shape, key
    np.testing.assert_array_equal(got, value, err_msg=key)
  # Views of one storage (transposed, at an offset) read as views.
  np.testing.assert_array_equal(state_dict['transposed'],
                                state_dict['base'].T)
  np.testing.assert_array_equal(state_dict['offset'],
                                state_dict['base'][1:3, 2:5])
  meta = content['meta']
  assert meta['CLASSES'] == ('a', 'b') and meta['epoch'] == 12
  assert isinstance(meta['cfg'], torch_pickle.Opaque)  # mmengine's, inert


def test_reading_runs_no_code_from_the_file(tmp_path):
  marker = tmp_path / 'ran'

  class Payload:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  path = tmp_path / 'evil.pth'
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, {}):
      pickle.dump(header, f)
    pickle.dump({'state_dict': Payload()}, f)
    pickle.dump([], f)
  content = torch_pickle.load(str(path))
  assert isinstance(content['state_dict'], torch_pickle.Opaque)
  assert not marker.exists()


class _Items(dict):
  pass


class _Elements(list):
  pass


def test_foreign_dict_and_list_subclasses_load_with_their_contents(tmp_path):
  """mmengine's configs and message hubs are such subclasses: pickle
  fills them after making them, without their classes here."""
  path = tmp_path / 'meta.pth'
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, {}):
      pickle.dump(header, f)
    pickle.dump({'meta': {'cfg': _Items(a=1), 'log': _Elements([2, 3])}}, f,
                protocol=2)
    pickle.dump([], f)
  meta = torch_pickle.load(str(path))['meta']
  assert isinstance(meta['cfg'], torch_pickle.Opaque)
  assert dict(meta['cfg']) == {'a': 1}
  assert meta['log'].elements == [2, 3]


def test_a_truncated_checkpoint_is_refused(tmp_path):
  data = open(os.path.join(FIXTURES, 'torch_pickle_legacy.pth'), 'rb').read()
  path = tmp_path / 'cut.pth'
  path.write_bytes(data[:-40])
  with pytest.raises(CheckpointError, match='truncated'):
    torch_pickle.load(str(path))
  path.write_bytes(b'not a checkpoint at all')
  with pytest.raises(CheckpointError, match='not a PyTorch checkpoint'):
    torch_pickle.load(str(path))


# --- recognising the published models --------------------------------------

@pytest.mark.parametrize('name', sorted(PUBLISHED_SHAPES))
def test_each_published_model_is_recognised_by_its_weights(name):
  keys = list(PUBLISHED_SHAPES[name])
  model = published.recognise(keys, {})
  assert model.name == name
  # Named by meta as mmdetection 2.x or 3.x (mmengine) wrote it.
  for meta in ({'exp_name': f'{model.names[-1]}.py'},
               {'experiment_name': f'{name}_20240101_120000'}):
    assert published.recognise(keys, meta) is model


def test_weights_that_contradict_their_config_are_refused():
  keys = list(PUBLISHED_SHAPES['mask-rcnn_r50_fpn_1x_coco'])
  with pytest.raises(CheckpointError, match='without GRoIE'):
    published.recognise(keys, {}, 'mask-rcnn_r50_fpn_groie_1x_coco')
  with pytest.raises(CheckpointError, match="unknown config 'yolo'"):
    published.recognise(keys, {}, 'yolo')
  r101 = list(PUBLISHED_SHAPES['mask-rcnn_r101-syncbn-gcb-r4-c3-c5_fpn_1x_coco'])
  with pytest.raises(CheckpointError, match='ResNet-101'):
    published.recognise(r101, {}, 'mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco')


def test_attention_head_counts_a_query_conv_allows():
  """mmcv's h heads of in // h channels: 252 outputs of 256 channels are
  6 heads of 42, 7 of 36, 9 of 28, ..., never 8 of 32."""
  allowed = published.attention_heads(np.zeros([252, 256, 1, 1]))
  assert {6, 7, 9, 12} <= set(allowed) and 8 not in allowed
  assert all(h * (256 // h) == 252 for h in allowed)
  assert published.attention_heads(np.zeros([12, 16, 1, 1])) == (6, 12)
  assert 8 in published.attention_heads(np.zeros([256, 256, 1, 1]))


# --- the command line --------------------------------------------------------

def test_the_command_line_converts_a_published_checkpoint_as_mmdetection_computes(
    tmp_path):
  """The reduced Mask R-CNN + GRoIE `.pth` through the command line: the
  model_dir it writes, restored as evaluation restores it, computes every
  stage as the real mmdetection did."""
  output_dir = str(tmp_path / 'converted')
  result = mmdet_published.run_cli(f'--checkpoint={REDUCED_PTH}', f'--output_dir={output_dir}',
                    f'--config_file={mmdet_published.reduced_config_file(tmp_path)}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'mask-rcnn_r50_fpn_groie_1x_coco' in result.stdout
  params = loading.load_experiment(
      'groie_maskrcnn_resnetfpn_coco', [f'{output_dir}/params.yaml'])
  model_config = params.task.model
  assert model_config.layout == 'mmdetection'
  assert model_config.num_classes == 9  # 8 classes (not COCO's) + background
  for block in (model_config.box_groie, model_config.mask_groie):
    assert block.mmcv_compat and block.attention_num_heads == 6
  model = mmdet_published.restored(output_dir, 'groie_maskrcnn_resnetfpn_coco')
  errors = mmdet_stages.compare(REDUCED, model)
  mmdet_stages.check_errors(errors)


@pytest.mark.parametrize('damage, message', [
    ('missing', 'no \'roi_head.mask_head.conv_logits.bias\''),
    ('extra', '1 state-dict keys were not mapped: roi_head.extra.weight'),
    ('shape', 'neck.fpn_convs.0.conv.weight: shape'),
    ('config', "unknown config 'mask-rcnn_r50_fpn_2x_coco'"),
])
def test_the_command_line_refuses_a_checkpoint_that_does_not_fit(
    tmp_path, damage, message):
  content = torch_pickle.load(REDUCED_PTH)
  state_dict = dict(content['state_dict'])
  flags = []
  if damage == 'missing':
    del state_dict['roi_head.mask_head.conv_logits.bias']
  elif damage == 'extra':
    state_dict['roi_head.extra.weight'] = np.zeros([2], np.float32)
  elif damage == 'shape':
    state_dict['neck.fpn_convs.0.conv.weight'] = np.zeros([16, 16, 1, 1],
                                                          np.float32)
  else:
    flags.append('--config=mask-rcnn_r50_fpn_2x_coco')
  path = tmp_path / 'damaged.npz'
  np.savez(path, **state_dict)
  result = mmdet_published.run_cli(f'--checkpoint={path}', f'--output_dir={tmp_path / "out"}',
                    f'--config_file={mmdet_published.reduced_config_file(tmp_path)}',
                    '--config=mask-rcnn_r50_fpn_groie_1x_coco', *flags)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'out' / 'checkpoint')


# --- fine-tuning a converted model on other classes --------------------------

def test_fine_tuning_with_another_class_count_restores_all_but_class_layers(
    tmp_path):
  output_dir = str(tmp_path / 'converted')
  convert.convert(REDUCED_PTH, output_dir,
                  config_files=[mmdet_published.reduced_config_file(tmp_path)])
  converted = mmdet_published.restored(output_dir,
                                       'groie_maskrcnn_resnetfpn_coco')
  params = loading.load_experiment(
      'groie_maskrcnn_resnetfpn_coco', [f'{output_dir}/params.yaml'],
      f'task.model.num_classes=4,task.init_checkpoint={output_dir}')
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  task = task_factory.get_task(params.task)
  model = task.build_model()
  fresh = [v.numpy() for v in class_change.class_layer_variables(model)]
  task.initialize(model)
  class_variables = class_change.class_layer_variables(model)
  for variable, before in zip(class_variables, fresh):
    np.testing.assert_array_equal(variable.numpy(), before)
  skipped = {id(v) for v in class_variables}
  restored = [v for v in model.variables if id(v) not in skipped]
  skipped = {id(v) for v in class_change.class_layer_variables(converted)}
  want = [v for v in converted.variables if id(v) not in skipped]
  assert len(restored) == len(want) > 300
  for variable, value in zip(restored, want):
    np.testing.assert_array_equal(variable.numpy(), value.numpy())
  # A checkpoint of another detector (other FPN width) is refused by name.
  other = loading.load_experiment(
      'groie_maskrcnn_resnetfpn_coco', [f'{output_dir}/params.yaml'],
      f'task.model.decoder.fpn.num_filters=8,task.init_checkpoint='
      f'{output_dir}')
  other_task = task_factory.get_task(other.task)
  with pytest.raises(CheckpointError, match='beyond its class layers'):
    other_task.initialize(other_task.build_model())


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
