"""Every paper-row YAML applies, over the shared base, to its experiment
and validates."""

import pathlib
import re

import pytest
import yaml

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading

PAPER_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'paper'
BASE = PAPER_DIR / 'base_1x_8gpu.yaml'
FILES = sorted(PAPER_DIR.glob('table*.yaml'))
MMDETECTION_LAYOUT = PAPER_DIR / 'mmdetection_layout.yaml'


def experiment_of(path):
  header = path.read_text(encoding='utf-8')
  return re.search(r'^# Experiment: (\S+)$', header, re.M).group(1)


def load(path):
  """The experiment named in the row's header, with the base and then the
  row applied as `train.py --config_file=<base> --config_file=<row>` does
  (strictly: an unknown key fails)."""
  return loading.load_experiment(experiment_of(path), [str(BASE), str(path)])


def leaves(path):
  """{dotted key: value} of every leaf of a YAML file."""
  def walk(node, prefix):
    if isinstance(node, dict):
      for key, value in node.items():
        yield from walk(value, f'{prefix}{key}.')
    else:
      yield prefix[:-1], node
  return dict(walk(yaml.safe_load(path.read_text(encoding='utf-8')), ''))


# The one base key a row changes: GC-Net trains its batch norms.
OVERRIDES = {'task.model.norm_eval': {'table5_gcnet_baseline',
                                      'table5_gcnet_groie',
                                      'table5_gcnet_r101_baseline',
                                      'table5_gcnet_r101_groie'}}


def test_the_base_holds_every_shared_key_and_no_row_restates_one():
  """Each key is said once: a row sets no key of the base but the declared
  overrides, each to another value; and a key every row sets alike
  belongs in the base."""
  base = leaves(BASE)
  assert {'runtime.num_gpus', 'task.model.frozen_stages',
          'trainer.train_steps'} <= base.keys()
  rows = {path.stem: leaves(path) for path in FILES}
  for name, row in rows.items():
    restated = row.keys() & base.keys()
    assert restated == {k for k, names in OVERRIDES.items() if name in names}, (
        name, restated)
    for key in restated:
      assert row[key] != base[key], (name, key)
  shared = set.intersection(*({(k, repr(v)) for k, v in row.items()}
                              for row in rows.values()))
  assert not shared, f'every row sets these alike, the base should: {shared}'


@pytest.mark.parametrize('path', FILES, ids=lambda p: p.stem)
def test_rows_header_gives_its_command(path):
  """`python train.py` with the row's experiment, the base, then the row."""
  header = path.read_text(encoding='utf-8')
  command = re.search(r'^#   (python train\.py .*?--model_dir=\S+)$', header,
                      re.M | re.S)
  assert command, 'no command in the header'
  arguments = re.sub(r'\s*\\\n#\s*', ' ', command.group(1)).split()
  assert arguments == [
      'python', 'train.py', f'--experiment={experiment_of(path)}',
      '--mode=train_and_eval', f'--config_file=configs/paper/{BASE.name}',
      f'--config_file=configs/paper/{path.name}', '--model_dir=...']


# The paper's Table I baseline and its Table V Faster R-CNN row are one run
# (36.5 box AP in both); each table gets its file.
SAME_RUN = {'table1_baseline', 'table5_faster_rcnn_baseline'}


def test_one_file_per_row_of_tables_one_to_five():
  # Tables I-IV: 15 rows; Table V: Faster, Mask and Grid R-CNN and GC-Net
  # (R50, and the authors' R101 pair), baseline and GRoIE each.
  assert len(FILES) == 25
  configs = {path.stem: load(path).as_dict() for path in FILES}
  names = sorted(configs)
  for i, name in enumerate(names):  # no two rows are the same run...
    for other in names[i + 1:]:
      if {name, other} != SAME_RUN:
        assert configs[name] != configs[other], (name, other)
  first, second = sorted(SAME_RUN)  # ...but the one the paper reused
  assert configs[first] == configs[second]


@pytest.mark.parametrize('path', FILES, ids=lambda p: p.stem)
def test_rows_train_the_papers_detector(path):
  """mmdetection's ResNet settings and box head in every row."""
  config = load(path)
  assert config.runtime.mixed_precision_dtype == 'float32'
  parser = config.task.train_data.parser
  assert (parser.aug_scale_min, parser.aug_scale_max) == (1.0, 1.0)
  assert parser.aug_rand_hflip
  model = config.task.model
  # GC-Net trains its batch norms, synchronised (mmdetection's SyncBN).
  gcnet = 'gcnet' in path.stem
  assert (model.frozen_stages, model.norm_eval) == (1, not gcnet)
  assert model.backbone.type == ('gc_resnet' if gcnet else 'resnet')
  if gcnet:
    assert model.norm_activation.use_sync_bn
    backbone = model.backbone.gc_resnet
    assert (backbone.gc_levels, backbone.gc_ratio, backbone.gc_pooling,
            backbone.gc_fusion) == ([3, 4, 5], 0.25, 'att', ['channel_add'])
    assert backbone.model_id == (101 if 'r101' in path.stem else 50)
  head = model.detection_head
  assert (head.num_convs, head.num_fcs, head.fc_dims) == (0, 2, 1024)


@pytest.mark.parametrize('path', FILES, ids=lambda p: p.stem)
def test_row_matches_its_name_and_quotes_the_paper(path):
  header = path.read_text(encoding='utf-8')
  assert re.search(r'^# Paper: \d\d\.\d box AP', header, re.M)
  if 'gcnet' in path.stem:  # and the model zoo's retrain
    assert re.search(r"^# mmdetection's model zoo .*: \d\d\.\d box AP, "
                     r'\d\d\.\d mask AP$', header, re.M)
  config = load(path)
  box = config.task.model.box_groie
  name = path.stem
  assert config.trainer.train_steps == 88716
  assert config.task.train_data.global_batch_size == 16
  grid = 'grid' in name
  # Grid R-CNN's grid branch: 14 x 14 features, the same extractor as its
  # box branch.
  assert (getattr(config.task.model, 'grid_groie', None) is not None) == grid
  if name.endswith('_baseline'):  # mmdetection's SingleRoIExtractor
    for block in (box, config.task.model.mask_groie,
                  getattr(config.task.model, 'grid_groie', None)):
      if block is not None:
        assert (block.level_selection, block.canonical_size,
                block.pre_processing, block.post_processing,
                block.sampling_ratio) == ('heuristic', 224.0, 'none', 'none',
                                          0)
    assert (config.task.model.mask_groie is None) == ('faster' in name or
                                                      'table1' in name or
                                                      grid)
    return
  if grid:
    grid_block = config.task.model.grid_groie
    assert (grid_block.level_selection, grid_block.aggregation,
            grid_block.pre_processing, grid_block.post_processing,
            grid_block.attention_num_heads) == ('all', 'sum', 'conv5x5',
                                                'attention', 6)
  if 'gcnet' in name:  # the authors' run: 8 heads in the box branch
    mask = config.task.model.mask_groie
    assert (box.attention_num_heads, mask.attention_num_heads) == (8, 6)
    assert (mask.level_selection, mask.pre_processing,
            mask.post_processing) == ('all', 'conv5x5', 'attention')
  if name.startswith('table3_pre_'):
    assert (box.pre_processing, box.post_processing) == (name[11:], 'none')
  if name.startswith('table4_post_'):
    assert (box.pre_processing, box.post_processing) == ('none', name[12:])
  expected = {'table1_baseline': ('heuristic', 'sum'),
              'table1_random': ('random', 'sum'),
              'table2_sum_plus': ('all', 'sum+'),
              'table2_concat': ('all', 'concat')}.get(name, ('all', 'sum'))
  assert (box.level_selection, box.aggregation) == expected



@pytest.mark.parametrize('path', FILES, ids=lambda p: p.stem)
def test_the_mmdetection_layout_overlay_applies_to_every_row(path):
  """Every row (Faster, Mask, GC-Net and Grid R-CNN) validates in the
  mmdetection layout."""
  files = [str(BASE), str(path), str(MMDETECTION_LAYOUT)]
  config = loading.load_experiment(experiment_of(path), files)
  assert config.task.model.layout == 'mmdetection'
  assert list(config.task.model.anchor.aspect_ratios) == [2.0, 1.0, 0.5]


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
