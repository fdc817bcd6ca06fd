"""The Model Garden task that trains and evaluates GRoIE Mask R-CNNs."""

from typing import Optional

from absl import logging
import tensorflow as tf
import tf_keras
from official.common import dataset_fn as dataset_fn_lib
from official.core import task_factory
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.dataloaders import input_reader
from official.vision.dataloaders import input_reader_factory
from official.vision.dataloaders import tf_example_decoder
from official.vision.tasks import maskrcnn

from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import bad_records
from groie_tf.data import class_ids
from groie_tf.data import mmdetection_resize
from groie_tf.data import mmdetection_targets
from groie_tf.data import shapes
from groie_tf.errors import ConfigError
from groie_tf.modeling import builder
from groie_tf.modeling import class_change
from groie_tf.modeling import gc_checkpoint
from groie_tf.modeling import gc_resnet
from groie_tf.tasks import mmdetection_evaluator


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
    decode (`groie_tf.data.bad_records`);
  - in the mmdetection layout, gives the model the image's extent as the
    frame to clip to and mmdetection's anchors and RPN targets
    (`groie_tf.data.mmdetection_targets`), and pastes masks for COCO
    evaluation as mmdetection does (`mmdetection_evaluator`).
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
    if (self.task_config.model.layout == 'mmdetection' and
        not params.is_training):
      dataset = self._mmdetection_eval_inputs(params, input_context)
    else:
      dataset = super().build_inputs(params, input_context,
                                     dataset_fn=dataset_fn)
    dataset = class_ids.checking_class_ids(
        dataset, self.task_config.model.num_classes, params.input_path)
    if self.task_config.model.layout == 'mmdetection':
      dataset = dataset.map(
          mmdetection_targets.relabel_fn(params.is_training,
                                         self.task_config.model,
                                         params.parser),
          num_parallel_calls=tf.data.AUTOTUNE)
    if self.task_config.deterministic_input:
      options = tf.data.Options()
      options.threading.private_threadpool_size = 1
      dataset = dataset.with_options(options)
    return dataset

  def _mmdetection_eval_inputs(
      self, params: maskrcnn_config.DataConfig,
      input_context: Optional[tf.distribute.InputContext]):
    """Model Garden's input pipeline (`MaskRCNNTask.build_inputs`), with
    mmdetection's test resize (`mmdetection_resize.EvalParser`): one canvas
    per image, so one image per replica unless all images share a size."""
    model = self.task_config.model
    per_replica = (input_context.get_per_replica_batch_size(
        params.global_batch_size) if input_context else
                   params.global_batch_size)
    if per_replica > 1 and self.task_config.shapes_data is None:
      raise ConfigError(
          'The mmdetection layout evaluates each image on its own canvas '
          '(mmdetection\'s test resize), so a replica takes one image at a '
          f'time: set task.validation_data.global_batch_size to the number of '
          f'replicas (it is {params.global_batch_size}, {per_replica} per '
          'replica).')
    if params.decoder.type != 'simple_decoder':
      raise ConfigError('The mmdetection layout reads tf.Examples with the '
                        "simple decoder; validation_data.decoder.type is "
                        f'{params.decoder.type!r}.')
    decoder_config = params.decoder.simple_decoder
    decoder = tf_example_decoder.TfExampleDecoder(
        include_mask=model.include_mask,
        regenerate_source_id=decoder_config.regenerate_source_id,
        mask_binarize_threshold=decoder_config.mask_binarize_threshold)
    parser = mmdetection_resize.EvalParser(
        test_scale=model.test_scale, output_size=model.input_size[:2],
        min_level=model.min_level, max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        max_num_instances=params.parser.max_num_instances,
        include_mask=model.include_mask,
        mask_crop_size=params.parser.mask_crop_size, dtype=params.dtype)
    reader = input_reader_factory.input_reader_generator(
        params, dataset_fn=dataset_fn_lib.pick_dataset_fn(params.file_type),
        decoder_fn=decoder.decode,
        combine_fn=input_reader.create_combine_fn(params),
        parser_fn=parser.parse_fn(False))
    return reader.read(input_context=input_context)

  def _build_coco_metrics(self):
    """Model Garden's COCO evaluator; in the mmdetection layout, one that
    pastes masks as mmdetection does (`mmdetection_evaluator`), on the same
    annotations."""
    super()._build_coco_metrics()
    if self.task_config.model.layout == 'mmdetection':
      # pylint: disable-next=protected-access
      annotation_file = self.coco_metric._annotation_file
      self.coco_metric = mmdetection_evaluator.MMDetectionCOCOEvaluator(
          annotation_file=annotation_file,
          include_mask=self.task_config.model.include_mask,
          per_category_metrics=self.task_config.per_category_metrics)

  def _init_checkpoint_file(self) -> Optional[str]:
    """`task.init_checkpoint`, a model_dir's latest checkpoint for a
    directory (as Model Garden reads it)."""
    path = self.task_config.init_checkpoint
    return tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path

  def _twin_builder(self):
    """Builds this task's detector with another class count."""
    model_config = self.task_config.model

    def build(num_classes: int) -> tf_keras.Model:
      twin_config = model_config.replace(num_classes=num_classes)
      return builder.build_model(
          twin_config,
          tf_keras.layers.InputSpec(shape=[None] + model_config.input_size))
    return build

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
    a plain ResNet checkpoint (`groie_tf.modeling.gc_checkpoint`), and a
    whole detector also loads a checkpoint of itself trained on another
    class count, but for its class layers (`modeling.class_change`)."""
    config = self.task_config
    modules = config.init_checkpoint_modules
    if config.init_checkpoint and modules == 'all':
      path = self._init_checkpoint_file()
      if path and class_change.checkpoint_class_count(
          model, path) != config.model.num_classes:
        classes = class_change.restore_with_new_classes(
            model, path, self._twin_builder())
        logging.info(
            'init_checkpoint %s has %d classes, the model %d: restored '
            'everything but the class layers (box classifier and regressor'
            '%s), which keep their initialisation.', path, classes,
            config.model.num_classes,
            ', mask logits' if config.model.include_mask else '')
        return
    if (not config.init_checkpoint or modules == 'all' or
        not isinstance(model.backbone, gc_resnet.GCResNet) or
        'backbone' not in modules):
      super().initialize(model)
      return
    path = self._init_checkpoint_file()
    gc_checkpoint.restore_backbone(model.backbone, path)
    if 'decoder' in modules:
      tf.train.Checkpoint(decoder=model.decoder).read(
          path).expect_partial().assert_existing_objects_matched()
