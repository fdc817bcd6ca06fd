"""GRoIE inside Model Garden's Mask R-CNN, end to end on random data.

    python -m groie_tf.demo

Builds the built-in data set's GRoIE Mask R-CNN with the project's one
builder (`groie_tf.modeling.builder`: Model Garden's factory, then both RoI
aligners replaced by GRoIE in the paper's configuration), runs a training
forward pass with its losses' inputs and an inference pass, and prints what
each stage produced. Training on real data is `train.py`.
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.ops import anchor

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.modeling import builder

_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256,
                                   'Side of the square input images.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 2, 'Images per batch.')


def anchor_boxes(config: maskrcnn_config.MaskRCNN, batch_size: int):
  """Model Garden's multilevel anchors, tiled over the batch."""
  boxes = anchor.Anchor(
      min_level=config.min_level, max_level=config.max_level,
      num_scales=config.anchor.num_scales,
      aspect_ratios=config.anchor.aspect_ratios,
      anchor_size=config.anchor.anchor_size,
      image_size=tuple(config.input_size[:2])).multilevel_boxes
  return {l: tf.tile(b[None], [batch_size, 1, 1, 1]) for l, b in boxes.items()}


def main(_):
  size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
  # The built-in data set's small model (ResNet-18 at half width, 48-channel
  # FPN) with the paper's GRoIE in both branches.
  config = exp_factory.get_exp_config('groie_maskrcnn_shapes').task.model
  config.input_size = [size, size, 3]
  model = builder.build_model(
      config, tf_keras.layers.InputSpec(shape=[None, size, size, 3]))

  rng = np.random.default_rng(0)
  images = tf.constant(rng.standard_normal((batch, size, size, 3)), tf.float32)
  image_shape = tf.constant([[size, size]] * batch, tf.float32)
  gt_boxes = tf.constant([[[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.8]]] * batch,
                         tf.float32) * size
  gt_classes = tf.constant([[1, 2]] * batch, tf.int32)
  gt_masks = tf.ones([batch, 2, size, size])
  anchors = anchor_boxes(config, batch)

  start = time.perf_counter()
  outputs = model(images, image_shape, anchors, gt_boxes, gt_classes,
                  gt_masks, training=True)
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  detections = model(images, image_shape, anchors, training=False)
  infer_seconds = time.perf_counter() - start

  box_groie, mask_groie = model.roi_aligner, model.mask_roi_aligner
  print(f'Mask R-CNN with GRoIE: {model.count_params():,} parameters')
  for name, layer in (('box', box_groie), ('mask', mask_groie)):
    print(f'  {name} GRoIE: levels P{layer.min_level}-P{layer.max_level}, '
          f'{layer.pre_processing} (shared={layer.share_pre_processing}) -> '
          f'{layer.aggregation} -> {layer.post_processing}, '
          f'{layer.crop_size}x{layer.crop_size}, '
          f'{layer.count_params():,} parameters')
  print(f'training pass ({train_seconds:.1f} s, tracing included): '
        f'class_outputs {outputs["class_outputs"].shape}, '
        f'mask_outputs {outputs["mask_outputs"].shape}')
  print(f'inference pass ({infer_seconds:.1f} s): detection_boxes '
        f'{detections["detection_boxes"].shape}, detection_masks '
        f'{detections["detection_masks"].shape}')


if __name__ == '__main__':
  app.run(main)
