"""Grid R-CNN's targets, jitter and decoding against the loop references,
with mmdetection's hand cases."""

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.ops import grid_points
from tests.reference import grid_points as ref


def _mg(boxes_xyxy):
  """mmdetection's [x1, y1, x2, y2] as Model Garden's [y1, x1, y2, x2]."""
  return np.asarray(boxes_xyxy, np.float32)[..., [1, 0, 3, 2]]


def _targets(rois_xyxy, gts_xyxy):
  """The op's targets in the reference's layout, `[R, 9, 28, 28]`."""
  got = grid_points.grid_targets(_mg(rois_xyxy), _mg(gts_xyxy)).numpy()
  return np.transpose(got, (0, 3, 1, 2))


def _plus(row, col):
  image = np.zeros((28, 28), np.float32)
  for r, c in ((row, col), (row - 1, col), (row + 1, col), (row, col - 1),
               (row, col + 1)):
    if 0 <= r < 28 and 0 <= c < 28:
      image[r, c] = 1
  return image


def test_the_windows_are_plus_regions_sub_regions():
  np.testing.assert_array_equal(
      grid_points.window_origins().numpy(),
      [[0, 0], [0, 14], [0, 28], [14, 0], [14, 14], [14, 28], [28, 0],
       [28, 14], [28, 28]])


def test_a_roi_equal_to_its_gt_box_centres_every_plus_in_its_window():
  box = [[100.0, 100.0, 200.0, 200.0]]
  got = _targets(box, box)[0]
  for j in range(9):
    np.testing.assert_array_equal(got[j], _plus(14, 14), err_msg=j)


def test_a_gt_box_shifted_30_px_moves_the_pluses_to_column_22():
  got = _targets([[100.0, 100.0, 200.0, 200.0]],
                 [[130.0, 100.0, 230.0, 200.0]])[0]
  for j in range(9):
    np.testing.assert_array_equal(got[j], _plus(14, 22), err_msg=j)


def test_a_gt_box_shifted_50_px_leaves_point_0_one_pixel():
  """Point 0's centre leaves its window (column 28): the left arm of its
  plus stays, at (row 14, column 27)."""
  got = _targets([[100.0, 100.0, 200.0, 200.0]],
                 [[150.0, 100.0, 250.0, 200.0]])[0]
  want = np.zeros((28, 28), np.float32)
  want[14, 27] = 1
  np.testing.assert_array_equal(got[0], want)


def test_a_gt_box_60_px_away_empties_every_window():
  got = _targets([[100.0, 100.0, 200.0, 200.0]], [[160.0, 100.0, 260.0,
                                                   200.0]])
  assert not got.any()


@pytest.mark.parametrize('width', [1.5, 0.5, 0.0])
def test_rois_of_1_5_px_or_less_get_no_targets(width):
  roi = [[100.0, 100.0, 100.0 + width, 140.0]]
  assert not _targets(roi, roi).any()
  # 1.6 px is enough.
  assert _targets([[100.0, 100.0, 101.6, 140.0]], [[100.0, 100.0, 101.6,
                                                    140.0]]).any()


def make_rois_and_gts():
  """`[40, 4]` float32 RoIs and their gt boxes, `[x1, y1, x2, y2]`:
  jittered-looking RoIs around the gt boxes, far ones, tiny ones, boxes
  off the image."""
  rng = np.random.default_rng(0)
  gts = rng.uniform(0, 300, (40, 2))
  gts = np.concatenate([gts, gts + rng.uniform(1, 200, (40, 2))], 1)
  size = gts[:, 2:] - gts[:, :2]
  noise = rng.uniform(-0.4, 0.4, (40, 4)) * np.concatenate([size, size], 1)
  rois = gts + noise
  rois[:5] = gts[:5] + [90, -80, 90, -80]  # far away: empty or partial
  rois[5:8, 2:] = rois[5:8, :2] + rng.uniform(0.1, 2.5, (3, 2))  # tiny
  rois[8:10] -= 250  # partly off the image
  return rois.astype(np.float32), gts.astype(np.float32)


def make_logits_and_rois():
  """`[6, 9, 28, 28]` float64 logits and `[6, 4]` RoIs, one of them padded."""
  rng = np.random.default_rng(4)
  rois = np.concatenate([rng.uniform(0, 300, (6, 2)),
                         rng.uniform(0, 300, (6, 2)) + 310], 1)
  rois[5] = [40.0, 40.0, 40.0, 40.0]  # a padded (empty) box stays finite
  # No exact ties; maxima near 0, so the points' probabilities differ and
  # the votes are weighted.
  return rng.normal(-6, 2, (6, 9, 28, 28)), rois


def test_random_rois_match_the_reference_exactly():
  """Every pixel of every window equal, edge cases included."""
  rois, gts = make_rois_and_gts()
  got = _targets(rois, gts)
  want = ref.targets(rois, gts)
  assert want.sum() > 1000 and (want.sum(axis=(1, 2, 3)) == 0).sum() >= 3
  np.testing.assert_array_equal(got, want)


def test_a_point_on_a_bin_edge_falls_where_float32_puts_it(monkeypatch):
  """gt corners placed on a cell edge of the expanded RoI in exact
  arithmetic: float32, as torch computes, puts many of them in the other
  cell. The op agrees with the float32 reference on every one."""
  rng = np.random.default_rng(1)
  rois, gts = [], []
  for _ in range(300):
    x1, y1 = rng.uniform(0, 300, 2).astype(np.float32)
    x2, y2 = np.float32(x1 + rng.uniform(2, 200)), np.float32(
        y1 + rng.uniform(2, 200))
    ex1 = np.float64(x1) - (np.float64(x2) - x1) / 2
    edge = np.float32(ex1 + 2 * (np.float64(x2) - x1) * rng.integers(1, 56) /
                      56)
    rois.append([x1, y1, x2, y2])
    gts.append([edge, y1, x2, y2])
  rois, gts = np.array(rois, np.float32), np.array(gts, np.float32)
  want = ref.targets(rois, gts)
  np.testing.assert_array_equal(_targets(rois, gts), want)
  monkeypatch.setattr(ref, 'f32', np.float64)
  exact = ref.targets(rois, gts)
  assert (exact != want).any(axis=(1, 2, 3)).sum() > 30


def test_leading_dimensions_and_a_larger_radius():
  rng = np.random.default_rng(2)
  gts = np.sort(rng.uniform(0, 200, (2, 3, 2, 2)), axis=2).reshape(2, 3, 4)
  gts = gts[..., [0, 2, 1, 3]].astype(np.float32)  # x1, y1, x2, y2
  rois = (gts + rng.uniform(-5, 5, gts.shape)).astype(np.float32)
  got = grid_points.grid_targets(_mg(rois), _mg(gts), radius=2).numpy()
  assert got.shape == (2, 3, 28, 28, 9)
  want = ref.targets(rois.reshape(-1, 4), gts.reshape(-1, 4), radius=2)
  np.testing.assert_array_equal(np.transpose(got.reshape(6, 28, 28, 9),
                                             (0, 3, 1, 2)), want)


def test_jitter_matches_the_reference_and_clamps_to_the_image():
  rng = np.random.default_rng(3)
  boxes = np.array([[10.0, 20.0, 60.0, 90.0], [0.0, 0.0, 30.0, 40.0],
                    [90.0, 50.0, 119.0, 99.0]])
  offsets = rng.uniform(-0.15, 0.15, (3, 4))
  offsets[1] = [-0.15, -0.15, 0.1, 0.1]  # pushed past the top-left corner
  offsets[2] = [0.15, 0.15, 0.15, 0.15]  # and past the bottom-right one
  height, width = 100, 120
  got = grid_points.jitter_boxes(
      tf.constant(_mg(boxes)[None], tf.float64),
      tf.constant(offsets[None], tf.float64),
      tf.constant([[height, width]])).numpy()[0]
  want = ref.jitter(boxes, offsets, height, width)
  np.testing.assert_allclose(got[:, [1, 0, 3, 2]], want, rtol=1e-12)
  assert want[1, 0] == 0 and want[1, 1] == 0
  assert want[2, 2] == width - 1 and want[2, 3] == height - 1
  # Zero offsets leave a box inside the image as it is.
  same = grid_points.jitter_boxes(tf.constant(_mg(boxes)[None], tf.float64),
                                  tf.zeros([1, 3, 4], tf.float64),
                                  tf.constant([[height, width]]))
  np.testing.assert_allclose(same.numpy()[0], _mg(boxes), rtol=1e-12)


def test_decoding_the_perfect_targets_gives_mmdetections_hand_box():
  """The targets of a RoI equal to its gt box, as +-10 logits: the first
  positive pixel in raster order is (row 13, column 14) in every window."""
  box = [[100.0, 100.0, 200.0, 200.0]]
  heatmaps = grid_points.grid_targets(_mg(box), _mg(box))
  logits = tf.where(heatmaps > 0, 10.0, -10.0)
  got = grid_points.decode_boxes(logits, tf.constant(_mg(box))).numpy()
  np.testing.assert_allclose(got[0, [1, 0, 3, 2]],
                             [101.786, 98.214, 201.786, 198.214], atol=1e-3)


def test_decoding_random_logits_matches_the_reference():
  logits, rois = make_logits_and_rois()
  got = grid_points.decode_boxes(
      tf.constant(np.transpose(logits, (0, 2, 3, 1)), tf.float32),
      tf.constant(_mg(rois))).numpy()
  want = ref.decode(logits, rois)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got[:, [1, 0, 3, 2]], want, rtol=1e-5,
                             atol=1e-3)
  # The votes are weighted: a point made more certain pulls its edge.
  less_sure = logits.copy()
  less_sure[0, 0] -= 4
  moved = grid_points.decode_boxes(
      tf.constant(np.transpose(less_sure, (0, 2, 3, 1)), tf.float32),
      tf.constant(_mg(rois))).numpy()[0, 1]  # x1
  assert abs(moved - got[0, 1]) > 0.5


def test_xla_matches_eager():
  rng = np.random.default_rng(5)
  gts = np.concatenate([rng.uniform(0, 100, (7, 2)),
                        rng.uniform(0, 100, (7, 2)) + 110], 1)
  rois = _mg(gts + rng.uniform(-20, 20, (7, 4)))
  gts = _mg(gts)
  logits = tf.constant(rng.normal(0, 2, (7, 28, 28, 9)), tf.float32)
  eager = (grid_points.grid_targets(rois, gts),
           grid_points.decode_boxes(logits, tf.constant(rois)))
  compiled = tf.function(
      lambda r, g, l: (grid_points.grid_targets(r, g),
                       grid_points.decode_boxes(l, r)),
      jit_compile=True)(tf.constant(rois), tf.constant(gts), logits)
  np.testing.assert_array_equal(compiled[0].numpy(), eager[0].numpy())
  np.testing.assert_allclose(compiled[1].numpy(), eager[1].numpy(),
                             rtol=1e-6)



def test_sampling_takes_every_positive_when_there_are_few():
  classes = tf.constant([[3, 0, -1, 2, 0], [0, 1, 0, 0, -1]])
  image, roi, valid = grid_points.sample_positives(classes, max_num=6)
  picks = sorted((int(i), int(r)) for i, r, v in zip(image, roi, valid) if v)
  assert picks == [(0, 0), (0, 3), (1, 1)]
  assert int(tf.reduce_sum(tf.cast(valid, tf.int32))) == 3
  # The invalid picks are the others, each once.
  assert len({(int(i), int(r)) for i, r in zip(image, roi)}) == 6


def test_sampling_draws_positives_uniformly_across_the_batch():
  """10 positives in image 0, 2 in image 1, 4 kept: each positive is kept
  with probability 4/12 whatever its image or place (mmdetection's
  randperm over the GPU's positives)."""
  classes = np.zeros((2, 16), np.int32)
  classes[0, 3:13] = 1
  classes[1, [0, 15]] = 5
  counts = np.zeros((2, 16))
  rng = np.random.default_rng(6)
  draws = 3000
  for _ in range(draws):
    image, roi, valid = grid_points.sample_positives(
        tf.constant(classes), 4, tf.constant(rng.uniform(size=(2, 16)),
                                             tf.float32))
    assert bool(tf.reduce_all(valid))
    np.add.at(counts, (image.numpy(), roi.numpy()), 1)
  frequency = counts / draws
  positive = classes > 0
  assert not counts[~positive].any()
  # Binomial standard error at p = 1/3 over 3000 draws: 0.0086.
  np.testing.assert_allclose(frequency[positive], 4 / 12, atol=0.035)


def test_the_loss_is_mmdetections_mean_and_zero_without_positives():
  rng = np.random.default_rng(7)
  fused = rng.normal(0, 2, (3, 28, 28, 9)).astype(np.float32)
  unfused = rng.normal(0, 2, (3, 28, 28, 9)).astype(np.float32)
  targets = (rng.uniform(size=(3, 28, 28, 9)) < 0.01).astype(np.float32)
  valid = np.array([True, False, True])

  def bce(logits):  # float64, from the definition
    x = logits[valid].astype(np.float64)
    t = targets[valid]
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()

  got = grid_points.grid_loss(fused, unfused, targets, valid)
  assert float(got) == pytest.approx(15 * (bce(fused) + bce(unfused)),
                                     rel=1e-5)
  none = tf.zeros([3], tf.bool)
  logits = tf.Variable(fused)
  with tf.GradientTape() as tape:
    loss = grid_points.grid_loss(logits, unfused, targets, none)
  assert float(loss) == 0.0
  gradient = tape.gradient(loss, logits)
  assert np.isfinite(gradient.numpy()).all() and not gradient.numpy().any()

if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
