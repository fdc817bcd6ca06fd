"""mmdetection's test-time resize (`Resize(scale=(1333, 800),
keep_ratio=True)` and `DetDataPreprocessor`), for evaluation and serving in
the mmdetection layout.

- Size: `s = min(long / max(h, w), short / min(h, w))` in float64 and
  `floor(x * s + 0.5)` per side (mmcv's `imrescale` and `_scale_size`);
  Model Garden fits the image into a fixed output size in float32 with
  round-half-even, which for 800 x 1333 scales portrait images by the
  wrong side.
- Pixels: bilinear with half-pixel centres and no antialiasing on the
  uint8 image, rounded back to integers, as OpenCV's `INTER_LINEAR` on
  uint8 (OpenCV's fixed-point weights still differ by one grey level on
  about 10% of pixels: measured in `docs/numerics.md`), then normalised
  with mmdetection's mean and std (Model Garden's, scaled to 0-255).
- Canvas: zeros after normalisation, bottom and right, to the next
  multiple of 32: one canvas per image size (a larger fixed canvas changes
  the features near the padding).
- `image_info` is Model Garden's record with the scaled size in row 1, the
  frame the model clips to (`mmdetection_targets`).
"""

from typing import Sequence, Tuple

import tensorflow as tf
from official.vision.dataloaders import maskrcnn_input
from official.vision.ops import preprocess_ops

SIZE_DIVISOR = 32
# mmdetection's mean and std (Model Garden's, on 0-255). Python tuples: a
# tensor made at import would start TensorFlow's runtime before a
# multi-worker strategy can configure it.
MEAN = preprocess_ops.MEAN_RGB
STD = preprocess_ops.STDDEV_RGB


def rescaled_size(size: tf.Tensor,
                  scale: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
  """mmcv's `imrescale` size for an image of `size` `(h, w)`.

  Args:
    size: int `[2]` (height, width).
    scale: `(long, short)` edges, in either order (mmdetection's
      `(1333, 800)`).

  Returns:
    `(new_size, factors)`: int32 `[2]` (height, width) and float32 `[2]`
    (new / old per axis, y then x).
  """
  size = tf.cast(size, tf.float64)
  long_edge, short_edge = float(max(scale)), float(min(scale))
  factor = tf.minimum(long_edge / tf.reduce_max(size),
                      short_edge / tf.reduce_min(size))
  new_size = tf.floor(size * factor + 0.5)
  return (tf.cast(new_size, tf.int32),
          tf.cast(new_size / size, tf.float32))


def test_image(image: tf.Tensor, scale: Sequence[int],
               size_divisor: int = SIZE_DIVISOR
               ) -> Tuple[tf.Tensor, tf.Tensor]:
  """The model input mmdetection makes of one uint8 RGB image.

  Args:
    image: uint8 `[H, W, 3]`.
    scale: `(long, short)` edges.
    size_divisor: the canvas is a multiple of it.

  Returns:
    `(canvas, image_info)`: float32 `[ceil(h'), ceil(w'), 3]` normalised
    and zero-padded, and Model Garden's `[4, 2]` record (original size,
    scaled size, scale factors, offset 0).
  """
  size = tf.shape(image)[:2]
  new_size, factors = rescaled_size(size, scale)
  resized = tf.image.resize(tf.cast(image, tf.float32), new_size,
                            method='bilinear', antialias=False)
  resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
  normalised = (resized - MEAN) / STD
  canvas = -(-new_size // size_divisor) * size_divisor
  canvas_image = tf.pad(normalised, [[0, canvas[0] - new_size[0]],
                                     [0, canvas[1] - new_size[1]], [0, 0]])
  image_info = tf.stack([tf.cast(size, tf.float32),
                         tf.cast(new_size, tf.float32), factors,
                         tf.zeros([2])])
  return canvas_image, image_info


class EvalParser(maskrcnn_input.Parser):
  """Model Garden's Mask R-CNN parser; evaluation images resized as
  mmdetection's test pipeline resizes them (`test_image`), one canvas per
  image. The ground truths are Model Garden's; the anchors, which the
  mmdetection layout makes itself, are left out (an empty tensor)."""

  def __init__(self, test_scale: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self._test_scale = tuple(test_scale)

  def _parse_eval_data(self, data):
    _, labels = super()._parse_eval_data(data)
    image, image_info = test_image(data['image'], self._test_scale)
    labels['image_info'] = image_info
    labels['anchor_boxes'] = tf.zeros([0])
    return tf.cast(image, self._dtype), labels
