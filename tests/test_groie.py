"""GRoIE against its float64 reference, in the paper setting and each ablation."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from groie_tf.layers import GRoIE
from groie_tf.layers import _empty_batch
from groie_tf.layers import groie as groie_module
from groie_tf.ops import fpn_levels
from groie_tf.ops import roi_align
from tests import layer_contract
from tests.reference import groie as ref

IMAGE_HEIGHT, IMAGE_WIDTH, CHANNELS = 128, 96, 12


def make_features(channels=CHANNELS, seed=0, levels=range(2, 7)):
  """Non-symmetric P2..P6 maps of a 128 x 96 input: `{str(l): [2, H, W, C]}`."""
  rng = np.random.default_rng(seed)
  return {str(l): rng.standard_normal(
      (2, IMAGE_HEIGHT // 2**l, IMAGE_WIDTH // 2**l, channels))
          for l in levels}


def make_boxes():
  """`[2, 6, 4]`: every FPN level under the heuristic, and the edge cases."""
  image0 = [[4.2, 7.9, 17.1, 13.3],       # small: P2
            [10.0, 5.0, 140.0, 90.0],     # partly outside, large
            [30.5, 20.2, 31.1, 20.9],     # under one pixel
            [0.0, 0.0, 0.0, 0.0],         # zero padding
            [200.0, 150.0, 260.0, 170.0],  # wholly outside
            [-20.0, -30.0, 108.0, 70.0]]  # partly outside
  image1 = [[50.0, 10.0, 110.0, 80.0],    # P3
            [1.0, 1.0, 127.0, 95.0],      # whole image
            [60.0, 33.0, 61.0, 90.0],     # one pixel tall
            [8.3, 60.1, 40.7, 71.9],
            [0.0, 0.0, 0.0, 0.0],
            [-1000.0, -900.0, 1100.0, 800.0]]  # huge: P5 under the heuristic
  return np.array([image0, image1], np.float64)


def tf_features(features, dtype=tf.float32):
  return {k: tf.constant(v, dtype) for k, v in features.items()}


def build(layer, features, boxes, scale=0.15, seed=0):
  """Builds `layer` and draws all weights (gamma included) at random."""
  layer(tf_features(features, layer.compute_dtype), tf.constant(boxes))
  layer_contract.randomize_weights(layer, seed=seed, scale=scale)
  return layer


def assert_matches_reference(layer, features, boxes, rtol=2e-5):
  got = layer(tf_features(features, layer.compute_dtype),
              tf.constant(boxes)).numpy()
  want = ref.groie(features, boxes, layer.get_config(),
                   ref.weights_by_name(layer))
  assert got.shape == want.shape
  scale = np.abs(want).max()
  assert scale > 1e-3, 'the configuration produced only zeros'
  np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)
  return got, want


# One row per line of the paper's Tables I-IV, plus the options the paper's
# text and the reference code disagree on.
ABLATIONS = {
    'table1_baseline': dict(level_selection='heuristic', pre_processing='none',
                            post_processing='none'),
    'table2_sum': dict(pre_processing='none', post_processing='none'),
    'table2_sum_plus': dict(aggregation='sum+', pre_processing='none',
                            post_processing='none'),
    'table2_concat': dict(aggregation='concat', pre_processing='none',
                          post_processing='none'),
    'table3_pre_conv1x1': dict(pre_processing='conv1x1', post_processing='none'),
    'table3_pre_conv3x3': dict(pre_processing='conv3x3', post_processing='none'),
    'table3_pre_conv5x5': dict(pre_processing='conv5x5', post_processing='none'),
    'table3_pre_non_local': dict(pre_processing='non_local',
                                 post_processing='none'),
    'table3_pre_attention': dict(pre_processing='attention',
                                 post_processing='none'),
    'table4_post_conv1x1': dict(pre_processing='none', post_processing='conv1x1'),
    'table4_post_conv3x3': dict(pre_processing='none', post_processing='conv3x3'),
    'table4_post_conv5x5': dict(pre_processing='none', post_processing='conv5x5'),
    'table4_post_non_local': dict(pre_processing='none',
                                  post_processing='non_local'),
    'table4_post_attention': dict(pre_processing='none',
                                  post_processing='attention'),
    'per_level_pre_processing': dict(share_pre_processing=False),
    'per_level_attention_pre': dict(share_pre_processing=False,
                                    pre_processing='attention',
                                    post_processing='none'),
    'heuristic_with_modules': dict(level_selection='heuristic',
                                   aggregation='sum+'),
    # The fair single-level rule of the built-in set's ablation: boxes of
    # make_boxes() land on other levels than under 224 px.
    'heuristic_canonical_56': dict(level_selection='heuristic',
                                   canonical_size=56.0, pre_processing='none',
                                   post_processing='none'),
    'mmcv_compat': dict(mmcv_compat=True),
    'legacy_alignment': dict(aligned=False, sampling_ratio=1),
    'levels_3_to_6': dict(min_level=3, max_level=6),
    'gather_implementation': dict(roi_align_implementation='gather'),
}


def test_paper_configuration_matches_reference():
  """Shared 5x5 conv, sum, GeneralizedAttention '0100' with gamma != 0."""
  features, boxes = make_features(), make_boxes()
  layer = build(GRoIE(crop_size=7), features, boxes)
  assert layer.post_module.gamma.numpy()[0] != 0
  assert_matches_reference(layer, features, boxes)


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablation_matches_reference(name):
  features, boxes = make_features(seed=1), make_boxes()
  layer = build(GRoIE(crop_size=5, **ABLATIONS[name]), features, boxes)
  assert_matches_reference(layer, features, boxes)


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablation_parameter_count_matches_its_formula(name):
  """Counted from the configuration alone (tests/reference/groie.py)."""
  features, boxes = make_features(), make_boxes()
  layer = GRoIE(crop_size=5, **ABLATIONS[name])
  layer(tf_features(features), tf.constant(boxes))
  assert layer.count_params() == ref.parameter_count(layer.get_config(),
                                                     CHANNELS)


def test_mask_branch_crop_size_matches_reference():
  features, boxes = make_features(seed=2), make_boxes()[:, :2]
  layer = build(GRoIE(crop_size=14), features, boxes)
  assert_matches_reference(layer, features, boxes)


def test_heuristic_selection_differs_from_all_levels():
  """Guards the reference tests: the options change the numbers."""
  features, boxes = make_features(seed=3), make_boxes()
  outputs = {}
  for selection in ('all', 'heuristic'):
    layer = GRoIE(crop_size=5, level_selection=selection,
                  pre_processing='none', post_processing='none')
    outputs[selection] = layer(tf_features(features), tf.constant(boxes))
  assert np.abs(outputs['all'] - outputs['heuristic']).max() > 0.1


def test_canonical_size_moves_rois_to_other_levels():
  """Guards the canonical-56 reference row: it is not the 224 rule again."""
  features, boxes = make_features(seed=3), make_boxes()
  outputs = [GRoIE(crop_size=5, level_selection='heuristic',
                   canonical_size=size, pre_processing='none',
                   post_processing='none')(tf_features(features),
                                           tf.constant(boxes)).numpy()
             for size in (224.0, 56.0)]
  moved = np.abs(outputs[0] - outputs[1]).max(axis=(2, 3, 4)) > 1e-3
  assert 2 <= moved.sum() < moved.size  # some RoIs move, not all


def test_random_selection_pools_one_uniform_level_per_roi():
  features = make_features(seed=4)
  rng = np.random.default_rng(4)
  corners = rng.uniform(0, 64, (2, 200, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(4, 60, (2, 200, 2))],
                         -1)
  layer = GRoIE(crop_size=3, level_selection='random', pre_processing='none',
                post_processing='none', seed=7)
  got = layer(tf_features(features), tf.constant(boxes)).numpy()
  candidates = np.stack([
      ref.groie(features, boxes, layer.get_config(), {},
                chosen_levels=np.full(boxes.shape[:2], level))
      for level in range(2, 6)])  # [4, B, N, S, S, C]
  errors = np.abs(candidates - got[None]).max(axis=(3, 4, 5))  # [4, B, N]
  assert np.all(errors.min(axis=0) < 1e-4), 'an RoI matches no single level'
  counts = np.bincount(errors.argmin(axis=0).ravel(), minlength=4)
  assert counts.min() > 60, f'levels are not drawn uniformly: {counts}'


def test_float64_layer_matches_reference_and_weight_gradients():
  """In float64 only RoIAlign rounds (to float32); the rest is exact."""
  features, boxes = make_features(seed=5), make_boxes()
  layer = build(GRoIE(crop_size=5, dtype='float64'), features, boxes)
  assert_matches_reference(layer, features, boxes, rtol=2e-6)
  feats = tf_features(features, tf.float64)
  layer_contract.assert_weight_gradients_match_finite_differences(
      layer, lambda: layer(feats, tf.constant(boxes)))


def test_gradients_reach_features_and_every_weight():
  features, boxes = make_features(seed=6), make_boxes()
  for options in ({}, dict(aggregation='concat', pre_processing='non_local',
                           share_pre_processing=False)):
    layer = build(GRoIE(crop_size=5, **options), features, boxes)
    feats = tf_features(features)
    layer_contract.assert_gradients_reach_everything(
        layer, lambda: tf.reduce_sum(layer(feats, tf.constant(boxes))**2),
        {k: feats[k] for k in ('2', '3', '4', '5')})


def test_no_boxes():
  features = tf_features(make_features())
  out = GRoIE(crop_size=7)(features, tf.zeros([2, 0, 4]))
  assert out.shape == (2, 0, 7, 7, CHANNELS)
  out = GRoIE(crop_size=7)(features, tf.zeros([0, 4]),
                           box_indices=tf.zeros([0], tf.int32))
  assert out.shape == (0, 7, 7, CHANNELS)
  # A count known only at run time takes the module path.
  layer = GRoIE(crop_size=7, aggregation='sum+')
  fn = tf.function(lambda b: layer(features, b),
                   input_signature=[tf.TensorSpec([2, None, 4])])
  assert fn(tf.zeros([2, 0, 4])).shape == (2, 0, 7, 7, CHANNELS)
  np.testing.assert_allclose(fn(tf.constant(make_boxes(), tf.float32)),
                             layer(features, tf.constant(make_boxes())),
                             rtol=1e-5, atol=1e-5)
  # 'concat''s 1x1 conv takes L*C channels to C: on an empty batch, oneDNN's
  # CPU Conv2D would return L*C, which the attention after it refuses.
  layer = GRoIE(crop_size=7, aggregation='concat')
  fn = tf.function(lambda b: layer(features, b),
                   input_signature=[tf.TensorSpec([2, None, 4])])
  assert fn(tf.zeros([2, 0, 4])).shape == (2, 0, 7, 7, CHANNELS)


def random_rois(seed, count=40):
  """`[2, count, 4]` RoIs from 2 to 120 px a side, the last 3 of each image
  zero (padding): under the heuristic at `canonical_size=32` every level
  P2-P5 gets some."""
  rng = np.random.default_rng(seed)
  corners = rng.uniform(-10.0, 100.0, (2, count, 2))
  sides = np.exp(rng.uniform(np.log(2.0), np.log(120.0), (2, count, 2)))
  boxes = np.concatenate([corners, corners + sides], -1)
  boxes[:, -3:] = 0.0
  return boxes


def all_levels_then_select(layer, feats, boxes, chosen):
  """GRoIE's single-level selections as they were computed before each RoI
  was pooled at its own level only: every RoI pooled from (and, with one
  module per level, pre-processed at) every level, weighted by its one-hot
  level and summed; then the shared pre-processing, the aggregation conv
  and the post-processing. `[B, N, S, S, C]`."""
  batch, count = boxes.shape[:2]
  flat = tf.constant(boxes.reshape(-1, 4), tf.float32)
  images = tf.repeat(tf.range(batch), count)
  levels = range(layer.min_level, layer.max_level + 1)
  weights = tf.one_hot(chosen, len(levels), axis=0,
                       dtype=layer.compute_dtype)[..., None, None, None]
  terms = []
  for i, level in enumerate(levels):
    pooled = tf.cast(roi_align.roi_align_flat(
        feats[str(level)], flat, images, layer.crop_size, 2**level,
        layer.sampling_ratio, layer.aligned), layer.compute_dtype)
    if not layer.share_pre_processing and layer.pre_modules[i] is not None:
      pooled = layer.pre_modules[i](pooled)
    terms.append(weights[i] * pooled)
  out = tf.add_n(terms)
  modules = ([layer.pre_modules[0]] if layer.share_pre_processing else []) + [
      layer.aggregation_conv, layer.post_module]
  for module in modules:
    if module is not None:
      out = module(out)
  return tf.reshape(out, [batch, count] + out.shape[1:].as_list())


SINGLE_LEVEL = {
    'heuristic_shared_conv_attention': dict(
        level_selection='heuristic', canonical_size=32.0, aggregation='sum+',
        pre_processing='conv3x3', post_processing='attention'),
    'heuristic_per_level_convs': dict(
        level_selection='heuristic', canonical_size=32.0,
        share_pre_processing=False, pre_processing='conv3x3',
        post_processing='none'),
    'random_per_level_non_local': dict(
        level_selection='random', share_pre_processing=False,
        pre_processing='non_local', aggregation='sum+',
        post_processing='none'),
}


@pytest.mark.parametrize('name', sorted(SINGLE_LEVEL))
def test_single_level_selection_equals_pooling_every_level_and_keeping_one(
    name, monkeypatch):
  """Outputs and feature gradients, on random RoIs spread over all levels
  (some zero), against `all_levels_then_select`. 'random' gets one fixed
  draw for both."""
  features, boxes = make_features(seed=9), random_rois(9)
  feats = tf_features(features)
  layer = build(GRoIE(crop_size=5, **SINGLE_LEVEL[name]), features, boxes)
  rng = np.random.default_rng(9)
  flat = boxes.reshape(-1, 4)
  if layer.level_selection == 'heuristic':
    chosen = fpn_levels.fpn_levels(flat, 2, 5, 32.0) - 2
  else:
    chosen = tf.constant(rng.integers(0, 4, len(flat)), tf.int32)
    monkeypatch.setattr(layer, '_chosen_levels', lambda _: chosen)
  assert len(np.unique(chosen.numpy())) == 4, 'a level gets no RoI'
  upstream = tf.constant(rng.standard_normal(
      (2, boxes.shape[1], 5, 5, CHANNELS)), tf.float32)

  def value_and_feature_gradients(fn):
    with tf.GradientTape() as tape:
      tape.watch(feats)
      out = fn()
      loss = tf.reduce_sum(upstream * out)
    return out.numpy(), tape.gradient(loss, feats)

  got, got_grads = value_and_feature_gradients(
      lambda: layer(feats, tf.constant(boxes, tf.float32)))
  want, want_grads = value_and_feature_gradients(
      lambda: all_levels_then_select(layer, feats, boxes, chosen))
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale)
  assert got_grads['6'] is None and want_grads['6'] is None  # P6: unused
  for level in '2345':
    want_grad = want_grads[level].numpy()
    assert np.abs(want_grad).max() > 1e-3, level
    np.testing.assert_allclose(got_grads[level].numpy(), want_grad, rtol=0,
                               atol=1e-6 * np.abs(want_grad).max(),
                               err_msg=f'level {level}')


@pytest.mark.parametrize('selection', ['heuristic', 'random', 'all'])
def test_single_level_selections_pool_and_pre_process_each_roi_once(
    selection, monkeypatch):
  """RoIAlign and the per-level modules see K RoIs in all, not L x K (as
  'all', the guard of this count, does)."""
  pooled, processed = [], []
  pool, guard = roi_align.roi_align_flat, groie_module.call_on_batch

  def counted_pool(features, boxes, *args, **kwargs):
    pooled.append(boxes.shape[0])
    return pool(features, boxes, *args, **kwargs)

  def counted_guard(module, rois):
    if module.name.startswith('pre_processing'):
      processed.append(rois.shape[0])
    return guard(module, rois)

  features, boxes = make_features(seed=10), random_rois(10)
  layer = GRoIE(crop_size=5, level_selection=selection, canonical_size=32.0,
                share_pre_processing=False, pre_processing='conv1x1',
                post_processing='none', seed=0)
  layer(tf_features(features), tf.constant(boxes))  # builds
  monkeypatch.setattr(roi_align, 'roi_align_flat', counted_pool)
  monkeypatch.setattr(groie_module, 'call_on_batch', counted_guard)
  layer(tf_features(features), tf.constant(boxes))
  count = boxes.shape[0] * boxes.shape[1]
  expected = 4 * count if selection == 'all' else count
  assert (sum(pooled), sum(processed)) == (expected, expected)
  assert len(pooled) == len(processed) == 4


@pytest.mark.parametrize('selection', ['heuristic', 'random'])
def test_single_level_selection_with_a_count_known_only_at_run_time(
    selection):
  """Per-level 3x3 convs (Conv2D needs `_empty_batch`'s guard) when some
  levels, or all, get no RoI: no RoI at all, two RoIs (at most two levels),
  the padded edge cases of `make_boxes()`."""
  feats = tf_features(make_features(seed=11))
  layer = GRoIE(crop_size=5, level_selection=selection,
                share_pre_processing=False, pre_processing='conv3x3',
                post_processing='none', seed=0)
  fn = tf.function(lambda b: layer(feats, b),
                   input_signature=[tf.TensorSpec([2, None, 4])])
  assert fn(tf.zeros([2, 0, 4])).shape == (2, 0, 5, 5, CHANNELS)
  two = np.array([[[4.0, 8.0, 12.0, 14.0]], [[0.0, 0.0, 0.0, 0.0]]])
  for boxes in (two, make_boxes()):
    got = fn(tf.constant(boxes, tf.float32)).numpy()
    assert got.shape == boxes.shape[:2] + (5, 5, CHANNELS)
    assert np.all(np.isfinite(got))
    if selection == 'heuristic':  # the same levels eagerly
      np.testing.assert_allclose(got, layer(feats, tf.constant(boxes)),
                                 rtol=1e-5, atol=1e-5)


def test_single_level_selection_compiles_with_xla():
  """The partition by level and its reassembly compile, to the eager
  numbers. The boxes are an argument of the compiled function: constant
  boxes would let XLA fold the partition's sizes."""
  features, boxes = make_features(seed=12), random_rois(12, count=12)
  feats = tf_features(features)
  layer = build(GRoIE(crop_size=5, level_selection='heuristic',
                      canonical_size=32.0, share_pre_processing=False,
                      pre_processing='conv3x3', aggregation='sum+'),
                features, boxes)
  boxes = tf.constant(boxes, tf.float32)
  compiled = tf.function(lambda b: layer(feats, b), jit_compile=True)
  np.testing.assert_allclose(compiled(boxes).numpy(),
                             layer(feats, boxes).numpy(), rtol=1e-5,
                             atol=1e-5)


def test_the_empty_batch_guard_adds_a_row_to_an_empty_batch_only():
  """A module on [K, ...] with K known at run time: it sees K rows, or one
  when K is 0; a Conv2D (which needs that row on a CPU) gives K rows."""
  seen = lambda x: tf.fill(tf.shape(x)[:1], tf.shape(x)[0])  # K per row
  conv = tf_keras.layers.Conv2D(5, 3, padding='same')
  fn = tf.function(
      lambda x: (_empty_batch.call_on_batch(seen, x[:, 0, 0, 0]),
                 _empty_batch.call_on_batch(conv, x)),
      input_signature=[tf.TensorSpec([None, 4, 4, 2])])
  sizes, out = fn(tf.zeros([3, 4, 4, 2]))
  assert sizes.numpy().tolist() == [3, 3, 3] and out.shape == (3, 4, 4, 5)
  sizes, out = fn(tf.zeros([0, 4, 4, 2]))
  assert sizes.shape == (0,) and out.shape == (0, 4, 4, 5)
  assert _empty_batch.call_on_batch(conv, tf.zeros([0, 4, 4, 2])).shape == (
      0, 4, 4, 5)


@pytest.mark.parametrize('options', [
    {}, dict(level_selection='heuristic', aggregation='sum+',
             share_pre_processing=False)], ids=['paper', 'heuristic'])
def test_flat_boxes_with_box_indices_match_reference(options):
  """RoIs of both images in any order, some twice (as the grid branch
  draws them from the whole batch): row k is the reference's output for
  RoI k in the image `box_indices[k]` names. The flat call comes first, so
  it builds the layer too."""
  features, per_image = make_features(seed=8), make_boxes()
  rng = np.random.default_rng(8)
  images, rows = rng.integers(0, 2, 15), rng.integers(0, 6, 15)
  layer = GRoIE(crop_size=5, **options)
  feats = tf_features(features)
  flat_call = lambda: layer(feats, tf.constant(per_image[images, rows]),
                            box_indices=tf.constant(images, tf.int32))
  assert flat_call().shape == (15, 5, 5, CHANNELS)
  layer_contract.randomize_weights(layer, seed=8, scale=0.15)
  want = ref.groie(features, per_image, layer.get_config(),
                   ref.weights_by_name(layer))[images, rows]
  np.testing.assert_allclose(flat_call().numpy(), want, rtol=0,
                             atol=2e-5 * np.abs(want).max())
  # Another image for each RoI changes most rows.
  other = layer(feats, tf.constant(per_image[images, rows]),
                box_indices=tf.constant(1 - images, tf.int32)).numpy()
  assert (np.abs(other - want).max(axis=(1, 2, 3)) > 1e-3).sum() > 7


def test_wrong_box_shapes_are_named():
  features = tf_features(make_features())
  layer = GRoIE(crop_size=5)
  with pytest.raises(ValueError, match=r'boxes \[B, N, 4\] \(or \[K, 4\]'):
    layer(features, tf.zeros([6, 4]))
  with pytest.raises(ValueError, match=r'With box_indices.*\[K, 4\]'):
    layer(features, tf.zeros([2, 6, 4]), box_indices=tf.zeros([12], tf.int32))
  with pytest.raises(ValueError, match=r'box_indices must be \[K\]'):
    layer(features, tf.zeros([6, 4]), box_indices=tf.zeros([5], tf.int32))


def test_padded_and_outside_boxes_give_finite_outputs():
  features = tf_features(make_features())
  boxes = np.zeros((2, 4, 4))
  boxes[0, 1] = [500.0, 500.0, 600.0, 700.0]
  for selection in ('all', 'heuristic'):
    out = GRoIE(level_selection=selection)(features, tf.constant(boxes))
    assert np.all(np.isfinite(out.numpy()))


def test_static_shapes_for_model_garden_heads():
  """Model Garden reads N, S and C from static shapes; B may be unknown."""
  layer = GRoIE(crop_size=7)
  specs = {str(l): tf.TensorSpec([None, 128 // 2**l, 96 // 2**l, CHANNELS])
           for l in range(2, 7)}
  fn = tf.function(layer, input_signature=[specs, tf.TensorSpec([None, 9, 4])])
  shape = fn.get_concrete_function().structured_outputs.shape.as_list()
  assert shape == [None, 9, 7, 7, CHANNELS]


def test_layer_contract():
  features, boxes = make_features(seed=7), make_boxes()
  feats = tf_features(features)
  layer = build(GRoIE(crop_size=5, kernel_regularizer='l2'), features, boxes)
  call = lambda l: l(feats, tf.constant(boxes))
  layer_contract.assert_serialization_round_trip(layer, call)
  layer_contract.assert_xla_matches_eager(layer, call)
  # conv; attention query, value, proj and both position fc kernels.
  assert len(layer.losses) == 6


@pytest.mark.parametrize('policy', ['mixed_bfloat16', 'mixed_float16'])
def test_mixed_precision(policy):
  """16-bit compute stays within a fraction of what attention contributes.

  The tolerance is relative to the attention block's own contribution to
  the output (the same layer with gamma = 0 is the block without it), so an
  attention that a 16-bit path turned into the identity fails. Measured
  error: about 4% of the contribution in bfloat16 (8-bit mantissa through
  the 5x5 conv), 0.5% in float16.
  """
  features, boxes = make_features(seed=8), make_boxes()
  reference = build(GRoIE(crop_size=7), features, boxes)
  reference.post_module.gamma.assign([1.0])
  expected = reference(tf_features(features), tf.constant(boxes)).numpy()
  weights = reference.get_weights()
  reference.post_module.gamma.assign([0.0])
  without_attention = reference(tf_features(features),
                                tf.constant(boxes)).numpy()
  contribution = np.abs(expected - without_attention).max()
  assert contribution > 0.1 * np.abs(expected).max()

  tf_keras.mixed_precision.set_global_policy(policy)
  layer = GRoIE(crop_size=7)
  # Model Garden's decoder hands over features in the compute dtype.
  feats = tf_features(features, layer.compute_dtype)
  layer(feats, tf.constant(boxes))
  layer.set_weights(weights)
  out = layer(feats, tf.constant(boxes))
  assert out.dtype == layer.compute_dtype
  assert all(w.dtype == tf.float32 for w in layer.weights)
  error = np.abs(tf.cast(out, tf.float32).numpy() - expected).max()
  assert error < 0.15 * contribution, (error, contribution)


def test_missing_level_is_named():
  features = tf_features(make_features(levels=range(2, 5)))
  with pytest.raises(ValueError, match='no level 5'):
    GRoIE()(features, tf.constant(make_boxes()))


def test_integer_level_keys_are_explained():
  features = {int(k): v for k, v in tf_features(make_features()).items()}
  with pytest.raises(ValueError, match='level strings'):
    GRoIE()(features, tf.constant(make_boxes()))


def test_channel_mismatch_is_named():
  features = tf_features(make_features())
  features['4'] = tf.zeros([2, 8, 6, 7])
  with pytest.raises(ValueError, match='level 4 has 7'):
    GRoIE()(features, tf.constant(make_boxes()))


@pytest.mark.parametrize('kwargs,message', [
    (dict(aggregation='mean'), 'aggregation'),
    (dict(pre_processing='conv7x7'), 'pre_processing'),
    (dict(post_processing='gc'), 'post_processing'),
    (dict(level_selection='largest'), 'level_selection'),
    (dict(level_selection='random', aggregation='concat'), 'nothing to concat'),
    (dict(min_level=5, max_level=2), 'min_level'),
    (dict(sampling_ratio=-1), 'sampling_ratio'),
    (dict(sampling_ratio=0, roi_align_implementation='kernel'), 'adaptive'),
    (dict(crop_size=0), 'output_size'),
    (dict(attention_num_heads=0), 'attention_num_heads'),
    (dict(canonical_size=0), 'canonical_size'),
    (dict(canonical_size='56'), 'canonical_size'),
    (dict(roi_align_implementation='tpu'), 'implementation'),
])
def test_invalid_options_raise_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    GRoIE(**kwargs)


def test_paper_parameter_count_at_256_channels():
  """1,896,961 per extractor: a 5x5 conv (25 * 256**2 + 256) and 6-head
  attention (4 * 256 * 252 + 256 + 1; 252 = 6 * (256 // 6)), as mmcv."""
  layer = GRoIE(crop_size=7)
  features = {str(l): tf.zeros([1, 64 // 2**l, 64 // 2**l, 256])
              for l in range(2, 6)}
  layer(features, tf.zeros([1, 1, 4]))
  assert layer.count_params() == 1896961


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
