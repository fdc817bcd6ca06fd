"""Deterministic FPN features and RoIs for the benchmarks."""

import numpy as np
import tensorflow as tf

LEVELS = (2, 3, 4, 5, 6)  # Model Garden's FPN outputs; GRoIE pools P2-P5.


def fpn_features(batch_size: int, image_size: int, channels: int, dtype,
                 seed: int = 0):
  """{str(level): [B, image_size / 2**level, image_size / 2**level, C]}."""
  rng = np.random.default_rng(seed)
  features = {}
  for level in LEVELS:
    side = image_size // 2**level
    values = rng.standard_normal([batch_size, side, side, channels])
    features[str(level)] = tf.cast(values.astype(np.float32), dtype)
  return features


def rois(batch_size: int, num_rois: int, image_size: int, seed: int = 0):
  """float32 `[B, N, 4]` boxes `[y1, x1, y2, x2]` inside the image.

  Sides are log-uniform from 8 pixels to the image size, so every level of
  the FPN rule gets RoIs, as the proposals of a trained RPN do; boxes are
  clipped to the image, as Model Garden's proposals are.
  """
  rng = np.random.default_rng(seed)
  centres = rng.uniform(0, image_size, [batch_size, num_rois, 2])
  sides = np.exp(rng.uniform(np.log(8), np.log(image_size),
                             [batch_size, num_rois, 2]))
  boxes = np.concatenate([centres - sides / 2, centres + sides / 2], -1)
  return tf.constant(np.clip(boxes, 0, image_size).astype(np.float32))
