"""Pooling: GRoIE's RoIAlign over 4 levels against Model Garden's aligner.

Model Garden's `MultilevelROIAligner` pools each RoI once, from the level of
the FPN rule, with one bilinear sample per bin. GRoIE pools each RoI from
all four levels P2-P5 with 2 x 2 samples per bin (mmdetection's
`sampling_ratio=2`): 16 times the samples. The `sampling_ratio=1` row
samples as densely as Model Garden does, over four levels.
"""

import itertools

import tensorflow as tf
from official.vision.modeling.layers import roi_aligner

from benchmarks import inputs
from groie_tf import ops

BRANCHES = (('box', 7, 512), ('mask', 14, 128))  # crop size, RoIs per image
GROIE_LEVELS = (2, 3, 4, 5)


def _four_levels(features, boxes, crop_size, sampling_ratio):
  return [ops.roi_align(features[str(level)], boxes, crop_size, 2**level,
                        sampling_ratio) for level in GROIE_LEVELS]


def run(setup, precision):
  """Rows for both branches at one precision, XLA off and on."""
  rows = []
  dtype = setup.compute_dtype(precision)
  features = inputs.fpn_features(setup.batch_size, setup.image_size,
                                 setup.channels, dtype)
  for (branch, crop_size, num_rois), xla in itertools.product(BRANCHES,
                                                              setup.xla):
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
    timed = setup.time({name: tf.function(fn, jit_compile=xla)
                        for name, fn in candidates.items()})
    baseline = next(iter(timed.values()))
    case = (f'{branch}: {setup.batch_size}x{num_rois} RoIs, '
            f'{crop_size}x{crop_size}')
    for name, seconds in timed.items():
      rows.append({'section': 'pooling', 'case': case, 'variant': name,
                   'precision': precision, 'xla': xla,
                   'median_ms': 1e3 * seconds,
                   'ratio': seconds / baseline})
  return rows
