"""SavedModel export of GRoIE detectors, refusing checkpoints that do not fit.

Model Garden's exporter rebuilds the stock Mask R-CNN from its own factory.
Given a GRoIE checkpoint it restores everything but GRoIE (the stock aligner
has no weights, so nothing complains) and exports a different model. Here
the export module builds the model with `groie_tf.modeling.builder`, as
training does, and the checkpoint's model variables must be exactly the
model's, both ways, before anything is written.
"""

import os
from typing import List, Optional, Set, Tuple

from absl import logging
import tensorflow as tf
import tf_keras
from official.core import config_definitions as cfg
from official.vision.serving import detection
from official.vision.serving import export_saved_model_lib

from groie_tf.data import mmdetection_resize
from groie_tf.errors import CheckpointError
from groie_tf.errors import UserError
from groie_tf.modeling import builder
from groie_tf.modeling import checkpoint_shapes

INPUT_TYPES = ('image_tensor', 'image_bytes', 'tf_example')
_SHOWN = 5  # variable paths quoted in an error
# Model Garden's NMS versions that serve any batch size.
_DYNAMIC_BATCH_NMS = ('batched', 'v2', 'v3')


def to_original_pixels(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
  """Boxes in the model input's frame, mapped back to the original image.

  Args:
    boxes: [B, N, 4] y1 x1 y2 x2, pixels of the resized (and padded) model
      input.
    image_info: [B, 4, 2] Model Garden's resize record: original [h, w],
      model input [h, w], scale [y, x], crop offset [y, x].

  Returns:
    [B, N, 4] y1 x1 y2 x2 in pixels of the original image, clipped to it.
    The resize did `box * scale - offset`; this undoes it.
  """
  def per_coordinate(row):  # [B, 2] -> [B, 1, 4], as y x y x
    return tf.tile(image_info[:, row:row + 1, :], [1, 1, 2])

  original = (boxes + per_coordinate(3)) / per_coordinate(2)
  # Model Garden clips to the padded input; the padding is not the image.
  return tf.minimum(tf.maximum(original, 0.0), per_coordinate(0))


class GRoIEDetectionModule(detection.DetectionModule):
  """Model Garden's detection export module, building the GRoIE model
  (with the grid branch for a Grid R-CNN config, whose served boxes are the
  grid's vote).

  The serving signatures, pre-processing and outputs (`detection_boxes`,
  `detection_scores`, `detection_classes`, `num_detections`,
  `detection_masks`, `image_info`) are Model Garden's, with one change:
  `detection_boxes` are in pixels of the image given, not of the resized
  model input that Model Garden returns them in (`image_info` still holds
  the scale). `detection_masks` are relative to their box, so they follow;
  the SavedModel's `mask_paste` variable names the rule that pastes them
  into the image ('model_garden' or 'mmdetection', by the layout).
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # Saved with the module: the rule `detection_masks` are pasted into
    # the image by (`groie_tf.ops.mask_paste`), which predict.py reads.
    self.mask_paste = tf.Variable(
        'mmdetection' if self.params.task.model.layout == 'mmdetection'
        else 'model_garden', trainable=False, name='mask_paste')

  def _build_model(self):
    model_config = self.params.task.model
    # As Model Garden's module: its default NMS needs a fixed batch size.
    if (self._batch_size is None and
        model_config.detection_generator.nms_version not in _DYNAMIC_BATCH_NMS):
      logging.info('NMS version %r needs a fixed batch size: serving uses '
                   "'batched'.", model_config.detection_generator.nms_version)
      model_config.detection_generator.nms_version = 'batched'
    return builder.build_model(
        model_config, tf_keras.layers.InputSpec(
            shape=[self._batch_size, *self._padded_size, 3]),
        create_weights=False)  # in the serving trace (`checked_module`)

  def preprocess(self, images: tf.Tensor):
    """Model Garden's; in the mmdetection layout, mmdetection's test resize
    (`mmdetection_resize.test_image`, `task.model.test_scale`): the canvas
    is the resized image's, rounded up to 32, whatever `input_image_size`
    says; `image_info[:, 1]` is the resized size, the frame the model clips
    to. The layout makes its own anchors: none are passed."""
    model_config = self.params.task.model
    if model_config.layout != 'mmdetection':
      return super().preprocess(images)
    with tf.device('cpu:0'):
      canvases, image_info = tf.map_fn(
          lambda image: mmdetection_resize.test_image(
              tf.cast(image, tf.uint8), model_config.test_scale),
          elems=images,
          fn_output_signature=(tf.TensorSpec([None, None, 3], tf.float32),
                               tf.TensorSpec([4, 2], tf.float32)))
    return canvases, {}, image_info

  def serve(self, images: tf.Tensor):
    outputs = super().serve(images)
    outputs['detection_boxes'] = to_original_pixels(
        outputs['detection_boxes'], outputs['image_info'])
    return outputs


def _examples(paths: Set[str]) -> str:
  shown = sorted(paths)[:_SHOWN]
  more = f' and {len(paths) - _SHOWN} more' if len(paths) > _SHOWN else ''
  return ', '.join(shown) + more


def check_checkpoint_fits(model: tf.Module, checkpoint_path: str,
                          experiment: str) -> None:
  """Raises CheckpointError unless the checkpoint holds exactly `model`'s
  variables, with their shapes.

  A restore would report a shape mismatch only among hundreds of warning
  lines, and a missing variable not at all.
  """
  expected_shapes = checkpoint_shapes.of_model(model)
  found_shapes = checkpoint_shapes.of_checkpoint(checkpoint_path)
  expected, found = set(expected_shapes), set(found_shapes)
  problems = []
  if expected - found:
    problems.append(f'the model has {len(expected - found)} variable(s) the '
                    f'checkpoint lacks: {_examples(expected - found)}')
  if found - expected:
    problems.append(f'the checkpoint has {len(found - expected)} variable(s) '
                    f'the model lacks: {_examples(found - expected)}')
  reshaped = sorted(p for p in expected & found
                    if expected_shapes[p] != found_shapes[p])
  if reshaped:
    problems.append(
        f'{len(reshaped)} variable(s) have other shapes, ' + ', '.join(
            f'{p} {found_shapes[p]} in the checkpoint, {expected_shapes[p]} in '
            'the model' for p in reshaped[:_SHOWN]) +
        ' (task.model.num_classes, for example, sets the heads\' shapes)')
  if problems:
    raise CheckpointError(
        f'Checkpoint {checkpoint_path} does not fit '
        f'{"experiment " + experiment if experiment else "the experiment"}: '
        f'{"; ".join(problems)}. Export with the experiment and config files '
        'it was trained with (its model_dir has them in params.yaml).')


def checked_module(
    params: cfg.ExperimentConfig, checkpoint_path: str, experiment: str = '',
    input_type: str = 'image_tensor', batch_size: Optional[int] = None,
    input_image_size: Optional[List[int]] = None
) -> Tuple[GRoIEDetectionModule, str]:
  """The experiment's export module, once the checkpoint is known to fit it.

  Args:
    params: the validated experiment the checkpoint was trained with.
    checkpoint_path: a checkpoint file prefix, or a directory (its latest).
    experiment: its name, for messages.
    input_type: one of `INPUT_TYPES`.
    batch_size: a fixed batch size, or None for any.
    input_image_size: [height, width]; the experiment's input size if None.

  Returns:
    The module, its variables built but not restored, and the checkpoint
    file prefix.
  """
  if input_type not in INPUT_TYPES:
    raise UserError(f'input_type must be one of {INPUT_TYPES}, got '
                     f'{input_type!r}.')
  if tf.io.gfile.isdir(checkpoint_path):
    directory, checkpoint_path = (checkpoint_path,
                                  tf.train.latest_checkpoint(checkpoint_path))
    if checkpoint_path is None:
      raise CheckpointError(f'No checkpoint in {directory}.')
  elif not tf.io.gfile.exists(checkpoint_path + '.index'):
    raise CheckpointError(f'No checkpoint at {checkpoint_path}: give a model_dir '
                     'or a checkpoint prefix such as model_dir/ckpt-900.')
  size = list(input_image_size or params.task.model.input_size[:2])
  module = GRoIEDetectionModule(params=params, batch_size=batch_size,
                                input_image_size=size, input_type=input_type,
                                num_channels=3)
  # Heads create their variables on first call: build them all.
  module.serve(tf.zeros([batch_size or 1, *size, 3], tf.uint8))
  check_checkpoint_fits(module.model, checkpoint_path,
                        experiment)
  return module, checkpoint_path


def export(params: cfg.ExperimentConfig, checkpoint_path: str,
           export_dir: str, input_type: str = 'image_tensor',
           batch_size: Optional[int] = None,
           input_image_size: Optional[List[int]] = None,
           experiment: str = '') -> str:
  """Writes `export_dir/saved_model`; returns its path.

  Arguments as for `checked_module`; `export_dir` gets `saved_model/`,
  `checkpoint/` and `params.yaml`.
  """
  size = list(input_image_size or params.task.model.input_size[:2])
  module, checkpoint_path = checked_module(
      params, checkpoint_path, experiment, input_type, batch_size, size)
  logging.info('Exporting the model of checkpoint %s to %s.', checkpoint_path,
               export_dir)
  export_saved_model_lib.export_inference_graph(
      input_type=input_type, batch_size=batch_size, input_image_size=size,
      params=params, checkpoint_path=checkpoint_path, export_dir=export_dir,
      export_module=module, export_checkpoint_subdir='checkpoint',
      export_saved_model_subdir='saved_model')
  return os.path.join(export_dir, 'saved_model')
