"""The benchmark command and its FLOP counter and timer.

Nothing here times anything against a threshold: the figures themselves
are in docs/performance.md.
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
import tf_keras

from benchmarks import flops
from benchmarks import grid as grid_module
from benchmarks import inference
from benchmarks import timing
from groie_tf.layers import GRoIE

# Trains, exports or benchmarks models: minutes (`pytest -m "not slow"`
# skips them).
pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _graph(function, *args):
  return tf.function(function).get_concrete_function(*args).graph


def test_conv_and_einsum_flops_are_two_per_multiply_add():
  images = tf.zeros([3, 5, 6, 4])
  kernel = tf.zeros([3, 3, 4, 7])
  conv = _graph(lambda x: tf.nn.conv2d(x, kernel, 1, 'SAME'), images)
  assert flops.graph_flops(conv) == 2 * 3 * 5 * 6 * 7 * 3 * 3 * 4
  a, b = tf.zeros([2, 3, 4]), tf.zeros([4, 5])
  einsum = _graph(lambda x, y: tf.einsum('nij,jk->nik', x, y), a, b)
  assert flops.graph_flops(einsum) == 2 * 2 * 3 * 4 * 5


def test_scoped_flops_count_only_the_layer_and_its_gradient():
  """The GRoIE share of a model: ops under the layer's name, backward too."""
  groie = GRoIE(crop_size=3, name='the_groie')
  dense = tf_keras.layers.Dense(5, name='after')
  features = {str(l): tf.zeros([1, 64 // 2**l, 64 // 2**l, 8])
              for l in range(2, 6)}
  boxes = tf.constant([[[4.0, 6.0, 30.0, 40.0], [0.0, 0.0, 64.0, 64.0]]])
  groie(features, boxes)

  def step(features, boxes):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(dense(tf.reshape(groie(features, boxes), [2, -1])))
    return tape.gradient(loss, groie.trainable_weights)

  graph = _graph(step, features, boxes)
  conv = 2 * 4 * 2 * 3 * 3 * 8 * 8 * 25  # 4 levels x 2 RoIs, 5x5, 8 -> 8
  scoped = flops.graph_flops(graph, ['the_groie'])
  # Forward conv, its kernel gradient and (for the levels' inputs) its input
  # gradient; the attention adds a few percent.
  assert 2 * conv < scoped < 3.3 * conv
  assert flops.graph_flops(graph) > scoped  # the Dense layer is outside


def test_median_seconds_interleaves_rounds_and_drops_the_warmup(monkeypatch):
  clock = iter(range(100))
  monkeypatch.setattr(timing.time, 'perf_counter', lambda: next(clock))
  calls = []
  functions = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  medians = timing.median_seconds(functions, warmup=1, repeats=3)
  assert calls == ['a', 'b'] * 4
  assert medians == {'a': 1, 'b': 1}  # each call reads the clock twice


def test_the_benchmark_command_writes_every_section(tmp_path):
  """`python -m benchmarks.run` at toy sizes: rows, ratios, table, JSON."""
  output = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.run', '--precisions=float32',
       '--xla=off', '--warmup=0', '--repeats=1', '--image_size=128',
       '--channels=12', '--layer_rois=4', '--e2e_image_size=128',
       '--e2e_batch_size=1', f'--output={output}'],
      cwd=_ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, PYTHONPATH=_ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  assert '### pooling' in result.stdout and '### end_to_end' in result.stdout
  report = json.loads(output.read_text())
  assert report['device'] and report['date']
  rows = report['rows']
  by_section = {}
  for row in rows:
    by_section.setdefault(row['section'], []).append(row)
  assert len(by_section['pooling']) == 12  # 2 branches x 2 modes x 3 variants
  assert len(by_section['layer']) == 6  # 2 modes x 3 variants
  assert len(by_section['end_to_end']) == 2
  # The stock aligner, then every row of Tables I-IV with the paper's AP.
  assert len(by_section['options']) == 1 + 15
  assert all(row['paper_box_ap'] > 30 for row in by_section['options'][1:])
  # Every variant of the ablation, the stock row first.
  # GCNet's blocks: the weights they add to R50 and R101 (r4, c3-c5), and
  # a small share of the FLOPs.
  gcnet = {(row['case'].split()[0], row['variant'].split()[0]): row
           for row in by_section['gcnet']}
  assert gcnet[('R50', 'GC')]['added_weights'] == 10_000_909
  assert gcnet[('R101', 'GC')]['added_weights'] == 18_961_694
  for depth in ('R50', 'R101'):
    assert gcnet[(depth, 'Model')]['gc_flop_share'] == 0
    assert 0 < gcnet[(depth, 'GC')]['gc_flop_share'] < 0.05
  ablation = {row['variant']: row for row in by_section['ablation']}
  assert list(ablation)[0] == 'stock' and len(ablation) == 7
  assert (ablation['fair_rule_with_modules']['extractor_weights'] ==
          ablation['groie']['extractor_weights'] > 0)
  baselines = [row for row in rows if row['variant'].startswith(
      ('Model Garden', 'stock'))]
  assert len(baselines) == 13 and all(row['ratio'] == 1 for row in baselines)
  # Grid R-CNN's head: about 1.1 GMAC per RoI (7 of its 8 convs are
  # 576 -> 576 at 7x7); GRoIE's 5x5 conv adds to it, the stock aligner
  # nothing.
  grid = {(row['case'].split(', ')[-1], row['variant'].split()[0]): row
          for row in by_section['grid'] if 'picks' not in row['case']}
  assert len(grid) == 6
  assert 1.0 < grid[('forward', 'GridHead')]['gmac_per_roi'] < 1.2
  assert (grid[('forward', 'GRoIE')]['gmac_per_roi'] >
          grid[('forward', 'stock')]['gmac_per_roi'] ==
          pytest.approx(grid[('forward', 'GridHead')]['gmac_per_roi'],
                        rel=0.02))
  assert grid[('forward', 'GRoIE')]['extractor_weights'] > 0
  # Training's picks: in a per-image table GRoIE processes every image's
  # row, B times the arithmetic of the flat call.
  picks = [row for row in by_section['grid'] if 'picks' in row['case']]
  assert len(picks) == 2 * len(grid_module.PICKS_BATCH_SIZES)
  for batch, (flat, table) in zip(grid_module.PICKS_BATCH_SIZES,
                                  zip(picks[::2], picks[1::2])):
    assert f'of {batch} images' in flat['case'] and flat['case'] == (
        table['case'])
    assert 'flat' in flat['variant'] and flat['ratio'] == 1
    assert table['gmac_per_roi'] == pytest.approx(
        batch * flat['gmac_per_roi'], rel=0.05)
  # RoIAlign's gradient by TensorFlow's kernel (the ratios' base), the
  # sparse product and the C++ kernel, for 3 cases.
  kernels = [row['variant'].split()[0] for row in by_section['gradient']]
  assert kernels == ['TensorFlow', 'sparse', 'C++'] * 3
  assert all(row['ratio'] == 1 for row in by_section['gradient']
             if row['variant'].startswith('TensorFlow'))
  layer = {(row['case'].split(', ')[-1], row['variant']): row
           for row in by_section['layer']}
  groie = layer[('forward', 'GRoIE (paper)')]
  conv = layer[('forward', 'plain 5x5 conv, [4K,7,7,C]')]
  assert conv['of_conv_ceiling'] == 1
  assert groie['gflop'] == pytest.approx(conv['gflop'], rel=0.1)
  assert groie['gflop'] > conv['gflop']
  stock, with_groie = by_section['end_to_end']
  assert with_groie['predicted'] > 1 and 0 < with_groie['groie_flop_share'] < 1
  # The share and the prediction describe the same FLOPs, both ways.
  added = 1 - 1 / with_groie['predicted']
  assert with_groie['groie_flop_share'] >= added
  assert stock['groie_flop_share'] == 0


def test_the_inference_section_counts_groie_at_its_arithmetic(tmp_path):
  """One 128 px image through the COCO models: every stage of every
  variant, the stages composing to the model's own call, and the box RoI
  extractor at the FLOPs of GRoIE's 5x5 conv on 1000 proposals x 4 levels
  (642 GFLOP whatever the image size)."""
  output = tmp_path / 'inference.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.run', '--sections=inference',
       '--precisions=float32', '--xla=off', '--warmup=0', '--repeats=1',
       '--inference_sizes=128x128', f'--output={output}'],
      cwd=_ROOT, capture_output=True, text=True, timeout=1800,
      env=dict(os.environ, PYTHONPATH=_ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  assert '### inference' in result.stdout
  rows = {(row['variant'], row['stage']): row
          for row in json.loads(output.read_text())['rows']}
  variants = [name for name, _ in inference.VARIANTS]
  assert set(rows) == {(v, s) for v in variants
                       for s in (*inference.STAGES, 'whole model')}
  stock, groie, fewer = variants
  assert all(rows[stock, s]['ratio'] == 1 for s in inference.STAGES)
  conv = 2 * 1000 * 4 * 7 * 7 * 256 * 256 * 25 / 1e9  # 642.3
  box = rows[groie, 'box RoI extractor']['gflop']
  assert conv < box < 1.05 * conv
  assert rows[fewer, 'box RoI extractor']['gflop'] == pytest.approx(
      0.3 * box, rel=1e-3)
  # The stock aligner's level rule and sampling: element-wise only.
  assert rows[stock, 'box RoI extractor']['gflop'] < 1e-3 * box
  # The mask branch: 100 detections x 4 levels at 14 x 14.
  mask_conv = 2 * 100 * 4 * 14 * 14 * 256 * 256 * 25 / 1e9
  assert mask_conv < rows[groie, 'mask RoI extractor']['gflop'] < (
      1.05 * mask_conv)
  # The stages are the model's inference, and count its FLOPs (anchors
  # aside).
  for variant in variants:
    whole = rows[variant, 'whole model']
    assert whole['staged_same_classes'], whole
    # Seen: 3.5e-4 px and 4.2e-4 (oneDNN fuses the ops of one function
    # and of the stages' functions apart); a wrong box decoding is pixels off.
    assert whole['staged_box_error_px'] < 1e-2, whole
    assert whole['staged_score_error'] < 1e-4, whole
    assert whole['staged_mask_error'] < 5e-3, whole
    total = sum(rows[variant, s]['gflop'] for s in inference.STAGES)
    assert total == pytest.approx(rows[variant, 'whole model']['gflop'],
                                  rel=1e-3)
    assert rows[variant, 'backbone']['gflop'] == pytest.approx(
        rows[stock, 'backbone']['gflop'])


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
