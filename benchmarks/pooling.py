"""Pooling: GRoIE's RoIAlign over 4 levels against Model Garden's aligner.

Model Garden's `MultilevelROIAligner` pools each RoI once, from the level of
the FPN rule, with one bilinear sample per bin. GRoIE pools each RoI from
all four levels P2-P5 with 2 x 2 samples per bin (mmdetection's
`sampling_ratio=2`): 16 times the samples. The `sampling_ratio=1` row
samples as densely as Model Garden does, over four levels.

`forward+backward` adds the gradient with respect to every level's map: for
our RoIAlign, its sparse transposed operator (`groie_tf.ops.roi_align`);
for the stock aligner, TensorFlow's gradient of its gathers.
"""

import functools
import itertools

import tensorflow as tf
from official.vision.modeling.layers import roi_aligner

from benchmarks import inputs
from groie_tf.ops import roi_align

BRANCHES = (('box', 7, 512), ('mask', 14, 128))  # crop size, RoIs per image
GROIE_LEVELS = (2, 3, 4, 5)


def _four_levels(features, boxes, crop_size, sampling_ratio):
  return [roi_align.roi_align(features[str(level)], boxes, crop_size, 2**level,
                        sampling_ratio) for level in GROIE_LEVELS]


def _forward(pool, features):
  del features  # The pooled maps depend on them already.
  return pool()


def _forward_and_backward(pool, features):
  """The sum of the pooled maps and its gradients w.r.t. every level's map.

  The sum is returned too: the gradient of a sum does not need the pooled
  values, and TF would prune the forward pass.
  """
  with tf.GradientTape() as tape:
    tape.watch(features)
    loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32))
                     for t in tf.nest.flatten(pool())])
  return loss, tape.gradient(loss, features)


MODES = (('forward', _forward), ('forward+backward', _forward_and_backward))


def run(setup, precision):
  """Rows for both branches at one precision, XLA off and on."""
  rows = []
  dtype = setup.compute_dtype(precision)
  features = inputs.fpn_features(setup.batch_size, setup.image_size,
                                 setup.channels, dtype)
  for (branch, crop_size, num_rois), xla, (mode, body) in itertools.product(
      BRANCHES, setup.xla, MODES):
    case = (f'{branch}: {setup.batch_size}x{num_rois} RoIs, '
            f'{crop_size}x{crop_size}, {mode}')
    boxes = inputs.rois(setup.batch_size, num_rois, setup.image_size)
    stock = roi_aligner.MultilevelROIAligner(crop_size)
    candidates = {
        'Model Garden MultilevelROIAligner (1 level)':
            lambda s=stock: s(features, boxes),
        'groie_tf.ops.roi_align x 4 levels': lambda c=crop_size: _four_levels(
            features, boxes, c, sampling_ratio=2),
        'groie_tf.ops.roi_align x 4 levels, sampling_ratio=1':
            lambda c=crop_size: _four_levels(features, boxes, c, 1),
    }
    timed = setup.time({
        name: tf.function(functools.partial(body, fn, features),
                          jit_compile=xla)
        for name, fn in candidates.items()})
    baseline = next(iter(timed.values()))
    for name, seconds in timed.items():
      rows.append({'section': 'pooling', 'case': case, 'variant': name,
                   'precision': precision, 'xla': xla,
                   'median_ms': 1e3 * seconds,
                   'ratio': seconds / baseline})
  return rows
