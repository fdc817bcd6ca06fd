"""Served detections are in pixels of the image given, at any size.

Model Garden resizes every image to the model input (keeping its aspect
ratio, padding the rest) and returns boxes in that frame. The export module
maps them back (`export.to_original_pixels`). These tests put a stand-in
detector behind the real export module: it finds the one bright object in
whatever the module feeds it, so its boxes are in the model input's frame,
as a trained Mask R-CNN's would be. The object's place in the original image
is known, so the served box and the pasted mask can be checked against it,
for images much smaller and much larger than the model input.
"""

import sys

import numpy as np
import pytest
import tensorflow as tf

from groie_tf.serving import export
from groie_tf.serving import predict
from tests.tiny_experiment import tiny_experiment

_MASK_SIZE = 28


class _BrightObjectDetector(tf.Module):
  """Detects the bright pixels of its (normalised) input as one object.

  Returns Model Garden's Mask R-CNN outputs for batch size 1: the bright
  region's box, [ymin, xmin, ymax, xmax] with ymax/xmax one past the last
  bright pixel, in the model input's pixels, and its 28x28 mask.
  """

  def call(self, images, image_shape, anchor_boxes, training):
    del image_shape, anchor_boxes, training
    # White is (255 - mean) / std ~ +2 after Model Garden's normalisation,
    # black ~ -2, the zero padding 0: a threshold of 0 halves each edge's
    # bilinear ramp.
    bright = tf.cast(tf.reduce_mean(images[0], -1) > 0, tf.float32)
    rows = tf.where(tf.reduce_any(bright > 0, 1))[:, 0]
    cols = tf.where(tf.reduce_any(bright > 0, 0))[:, 0]
    box = tf.cast(tf.stack([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]),
                  tf.float32)
    size = tf.cast(tf.shape(bright), tf.float32)
    # crop_and_resize samples at corners: pixel centres run from edge + 0.5.
    normalised = (box + [0.5, 0.5, -0.5, -0.5]) / tf.concat([size - 1] * 2, 0)
    mask = tf.image.crop_and_resize(bright[None, :, :, None], normalised[None],
                                    [0], [_MASK_SIZE, _MASK_SIZE])[..., 0]
    return {'detection_boxes': box[None, None],
            'detection_scores': tf.constant([[0.9]]),
            'detection_classes': tf.constant([[1]]),
            'num_detections': tf.constant([1]),
            'detection_masks': mask[None]}

  __call__ = call  # what Model Garden's export base expects of a tf.Module


class _Module(export.GRoIEDetectionModule):
  def _build_model(self):
    return _BrightObjectDetector()


@pytest.fixture(scope='module')
def module(tiny_shapes):
  config = tiny_experiment(tiny_shapes)
  return _Module(params=config, batch_size=None, input_image_size=[256, 256],
                 num_channels=3)


def _image_with_ellipse(height, width, box):
  """A black image with a white ellipse filling `box` (x, y, w, h)."""
  x, y, w, h = box
  rows, cols = np.mgrid[:height, :width] + 0.5
  inside = (((cols - x - w / 2) / (w / 2)) ** 2 +
            ((rows - y - h / 2) / (h / 2)) ** 2) <= 1
  return np.where(inside[..., None], 255, 0).astype(np.uint8).repeat(3, -1), inside


@pytest.mark.parametrize('height, width, box', [
    (1500, 2000, (1210.0, 300.0, 560.0, 900.0)),  # 7.8x the input, landscape
    (2000, 700, (100.0, 1500.0, 420.0, 300.0)),  # portrait, padded on the right
    (20, 30, (9.0, 3.0, 18.0, 14.0)),  # 1/10 of the input
    (256, 256, (30.0, 140.0, 90.0, 60.0)),  # the input size: unchanged
])
def test_boxes_and_masks_are_in_pixels_of_the_image_given(module, height,
                                                           width, box):
  image, ellipse = _image_with_ellipse(height, width, box)
  outputs = module.serve(tf.constant(image[None]))
  detections = {k: v.numpy()[0] for k, v in outputs.items()}
  instance, = predict.to_instances(detections, height, width, 0.5)

  # One pixel of the model input either way (the edge's bilinear ramp),
  # in original pixels, plus one for the ellipse's own pixel rounding.
  scale = float(detections['image_info'][2, 0])
  np.testing.assert_allclose(instance['box'], box, atol=1 / scale + 1)
  assert instance['mask'].shape == (height, width)
  iou = (instance['mask'] & ellipse).sum() / (instance['mask'] | ellipse).sum()
  assert iou > 0.9, iou


def test_to_original_pixels_undoes_the_resize_and_clips_to_the_image():
  # A 100x300 image scaled by 0.5 into a 256x256 input, cropped 10 px down.
  image_info = tf.constant([[[100, 300], [256, 256], [0.5, 0.5], [10, 0]]],
                           tf.float32)
  boxes = tf.constant([[[0, 0, 40, 150], [20, 100, 80, 256]]], tf.float32)
  np.testing.assert_allclose(
      export.to_original_pixels(boxes, image_info).numpy(),
      [[[20, 0, 100, 300], [60, 200, 100, 300]]])


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
