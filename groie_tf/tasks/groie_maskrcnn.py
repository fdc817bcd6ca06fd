"""The Model Garden task that trains and evaluates GRoIE Mask R-CNNs."""

from typing import Optional

import tensorflow as tf
import tf_keras
from official.core import task_factory
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.dataloaders import tf_example_decoder
from official.vision.tasks import maskrcnn

from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import bad_records
from groie_tf.data import class_ids
from groie_tf.data import shapes
from groie_tf.errors import ConfigError
from groie_tf.modeling import builder
from groie_tf.modeling import gc_checkpoint
from groie_tf.modeling import gc_resnet


def _reading_shapes_data(
    params: groie_config.GRoIEMaskRCNNTask) -> groie_config.GRoIEMaskRCNNTask:
  """`params` reading its built-in data set, generated if missing."""
  shapes.ensure_dataset(params.shapes_data)
  paths = groie_config.shapes_data_paths(params.shapes_data)
  # An unlocked copy: Model Garden locks the experiment once validated.
  return params.replace(
      train_data={'input_path': paths['train_data.input_path']},
      validation_data={'input_path': paths['validation_data.input_path']},
      annotation_file=paths['annotation_file'])


@task_factory.register_task_cls(groie_config.GRoIEMaskRCNNTask)
class GRoIEMaskRCNNTask(maskrcnn.MaskRCNNTask):
  """Model Garden's `MaskRCNNTask` building its model with GRoIE.

  Inputs, losses, COCO evaluation and summaries are Model Garden's own. On
  top of them, this task

  - builds its model with `groie_tf.modeling.builder`, the one builder,
    and freezes backbone stages and batch-norm statistics as mmdetection
    does (`build_model`);
  - starts a GC ResNet backbone from a plain ResNet checkpoint, context
    blocks left at their identity init (`initialize`);
  - seeds Python, NumPy and TensorFlow with `task.seed` when it is created,
    whichever entry point creates it;
  - with `task.shapes_data` set, generates the built-in data set on first
    use and reads it (the config leaves its paths empty);
  - checks every batch's class ids against `num_classes` (Model Garden
    does not, see `groie_tf.data.class_ids`);
  - with `task.deterministic_input`, runs the input pipeline on one thread,
    so that a seeded run draws the same flips and anchor samples each time;
  - with `task.skip_bad_records`, drops training records that do not
    decode (`groie_tf.data.bad_records`).
  """

  def __init__(self, params: groie_config.GRoIEMaskRCNNTask, logging_dir=None,
               name=None):
    if params.seed is not None:
      tf_keras.utils.set_random_seed(params.seed)
    if params.shapes_data is not None:
      groie_config.check_shapes_data_paths(params)
      params = _reading_shapes_data(params)
    super().__init__(params, logging_dir=logging_dir, name=name)

  def build_inputs(self, params: maskrcnn_config.DataConfig,
                   input_context: Optional[tf.distribute.InputContext] = None):
    """Model Garden's input pipeline, class ids checked; the built-in set's
    files if the config names no others; on one thread with
    `deterministic_input`; bad training records dropped with
    `skip_bad_records`."""
    if self.task_config.shapes_data is not None and not params.input_path:
      params = (self.task_config.train_data if params.is_training else
                self.task_config.validation_data)
    dataset_fn = None
    if params.is_training and self.task_config.skip_bad_records:
      if params.file_type != 'tfrecord':
        raise ConfigError('task.skip_bad_records reads plain TFRecord files; '
                          f'task.train_data.file_type is '
                          f'{params.file_type!r}.')
      decoder = tf_example_decoder.TfExampleDecoder(
          include_mask=self.task_config.model.include_mask)
      dataset_fn = bad_records.skipping_dataset_fn(decoder.decode)
    dataset = class_ids.checking_class_ids(
        super().build_inputs(params, input_context, dataset_fn=dataset_fn),
        self.task_config.model.num_classes, params.input_path)
    if self.task_config.deterministic_input:
      options = tf.data.Options()
      options.threading.private_threadpool_size = 1
      dataset = dataset.with_options(options)
    return dataset

  def build_model(self) -> tf_keras.Model:
    """The config's model (`groie_tf.modeling.builder`), with Model
    Garden's weight decay and `freeze_backbone`, then `frozen_stages` and
    `norm_eval`."""
    config = self.task_config
    decay = config.losses.l2_weight_decay
    # As Model Garden's task: halved, to match tf.nn.l2_loss.
    regularizer = tf_keras.regularizers.l2(decay / 2.0) if decay else None
    model = builder.build_model(
        config.model,
        tf_keras.layers.InputSpec(shape=[None] + config.model.input_size),
        regularizer)
    if config.freeze_backbone:
      model.backbone.trainable = False
    builder.apply_backbone_freezing(model, config.model)
    return model

  def initialize(self, model: tf_keras.Model):
    """Model Garden's checkpoint loading; a GC ResNet backbone also loads
    a plain ResNet checkpoint (`groie_tf.modeling.gc_checkpoint`)."""
    config = self.task_config
    modules = config.init_checkpoint_modules
    if (not config.init_checkpoint or modules == 'all' or
        not isinstance(model.backbone, gc_resnet.GCResNet) or
        'backbone' not in modules):
      super().initialize(model)
      return
    path = config.init_checkpoint
    if tf.io.gfile.isdir(path):
      path = tf.train.latest_checkpoint(path)
    gc_checkpoint.restore_backbone(model.backbone, path)
    if 'decoder' in modules:
      tf.train.Checkpoint(decoder=model.decoder).read(
          path).expect_partial().assert_existing_objects_matched()
