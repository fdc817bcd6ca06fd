"""The per-level analysis: shares sum to 1 and mean what they say."""

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.ops import fpn_levels
from groie_tf.analysis import levels
from groie_tf.layers import GRoIE
from tests.layer_contract import randomize_weights

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _features_and_boxes(channels=6):
  rng = np.random.default_rng(7)
  features = {str(l): tf.constant(rng.standard_normal(
      (1, 64 // 2**l, 48 // 2**l, channels)), tf.float32) for l in range(2, 6)}
  boxes = tf.constant([[[4, 3, 9, 12], [0, 0, 60, 44], [10, 5, 40, 20],
                        [2, 2, 3.5, 2.5]]], tf.float32)
  return features, boxes


def test_shares_are_each_level_s_part_of_the_sum():
  features, boxes = _features_and_boxes()
  layer = GRoIE(crop_size=3, post_processing='none', attention_num_heads=1)
  layer(features, boxes)
  randomize_weights(layer, seed=3)
  shares = levels.level_shares(layer, features, boxes)
  np.testing.assert_allclose(shares.sum(-1), 1, atol=1e-12)
  # After the ReLU conv each term is >= 0, so a share is that level's part
  # of the aggregate's total.
  terms = [t.numpy().astype(np.float64)
           for t in layer.level_features(features, boxes)]
  assert min(t.min() for t in terms) >= 0
  total = sum(terms).sum((2, 3, 4))
  for level, term in enumerate(terms):
    np.testing.assert_allclose(shares[..., level], term.sum((2, 3, 4)) / total,
                               rtol=1e-6)


def test_heuristic_selection_gives_one_hot_shares_on_the_rule_s_level():
  features, boxes = _features_and_boxes()
  layer = GRoIE(crop_size=3, level_selection='heuristic',
                pre_processing='none', post_processing='none')
  shares = levels.level_shares(layer, features, boxes)[0]
  rule = fpn_levels.fpn_levels(boxes, 2, 5).numpy()[0] - 2
  np.testing.assert_array_equal(shares, np.eye(4)[rule])


def test_concat_has_no_shares():
  features, boxes = _features_and_boxes()
  with pytest.raises(ValueError, match='sum aggregations'):
    levels.level_shares(GRoIE(crop_size=3, aggregation='concat',
                              post_processing='none'), features, boxes)


def test_summary_groups_by_size_and_counts_the_rule_s_levels():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 20, 30], [0, 0, 200, 200],
                    [0, 0, 300, 300]], np.float64)
  shares = np.array([[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0],
                     [0.25, 0.25, 0.25, 0.25]])
  rows = levels.summarize(shares, boxes, 2, 5)
  assert [r['size_range'] for r in rows] == ['0-32 px', '112-224 px',
                                             '224-inf px']
  assert [r['count'] for r in rows] == [2, 1, 1]
  np.testing.assert_allclose(rows[0]['groie_share'], [0.75, 0.25, 0, 0])
  # FPN rule: sqrt(area) 10 and 24.5 -> P2, 200 -> P3, 300 -> P4.
  assert rows[0]['heuristic_share'] == [1, 0, 0, 0]
  assert rows[1]['heuristic_share'] == [0, 1, 0, 0]
  assert rows[2]['heuristic_share'] == [0, 0, 1, 0]


def test_analyze_levels_py_writes_the_plot_and_shares(tiny_shapes, tmp_path):
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  from groie_tf.data import shapes  # pylint: disable=g-import-not-at-top
  from tests.tiny_experiment import tiny_experiment  # pylint: disable=g-import-not-at-top
  config = tiny_experiment(tiny_shapes)
  model = task_factory.get_task(config.task).build_model()
  checkpoint = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
  hyperparams.save_params_dict_to_yaml(config, str(tmp_path / 'params.yaml'))
  result = subprocess.run(
      [sys.executable, 'analyze_levels.py',
       '--experiment=groie_maskrcnn_shapes',
       f'--config_file={tmp_path / "params.yaml"}',
       f'--checkpoint_path={checkpoint}',
       f'--images={os.path.join(shapes.dataset_dir(tiny_shapes), "val")}',
       f'--output_dir={tmp_path / "out"}', '--score_threshold=0'],
      cwd=_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / 'out' / 'levels.json').read_text())
  assert report['levels'] == ['P2', 'P3', 'P4', 'P5'] and report['rois'] > 0
  assert sum(r['count'] for r in report['by_size']) == report['rois']
  for row in report['by_size']:
    assert sum(row['groie_share']) == pytest.approx(1)
    assert sum(row['heuristic_share']) == pytest.approx(1)
  assert (tmp_path / 'out' / 'levels.png').stat().st_size > 1000
  assert re.search(r'RoI size +count \| GRoIE +P2 +P3 +P4 +P5 \| FPN rule',
                   result.stdout)  # the table has a header
  assert 'Image 1/4:' in result.stderr  # progress while it runs


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
