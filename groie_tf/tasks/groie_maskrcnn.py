"""The Model Garden task that trains and evaluates GRoIE Mask R-CNNs."""

import tf_keras
from official.core import task_factory
from official.vision.tasks import maskrcnn

from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import shapes
from groie_tf.modeling import factory


@task_factory.register_task_cls(groie_config.GRoIEMaskRCNNTask)
class GRoIEMaskRCNNTask(maskrcnn.MaskRCNNTask):
  """Model Garden's `MaskRCNNTask` building its model with GRoIE.

  Inputs, losses, COCO evaluation and summaries are Model Garden's own; only
  `build_model` differs, and the built-in data set is generated on first use.
  """

  def __init__(self, params: groie_config.GRoIEMaskRCNNTask, logging_dir=None,
               name=None):
    if params.shapes_data is not None:
      if params.train_data.input_path != groie_config.shapes_data_paths(
          params.shapes_data)['train_data.input_path']:
        raise ValueError('task.shapes_data is set but the input paths do not '
                         'point to it: validate the experiment config first.')
      shapes.ensure_dataset(params.shapes_data)
    super().__init__(params, logging_dir=logging_dir, name=name)

  def build_model(self) -> tf_keras.Model:
    model_config = self.task_config.model
    input_specs = tf_keras.layers.InputSpec(
        shape=[None] + model_config.input_size)
    l2_weight_decay = self.task_config.losses.l2_weight_decay
    # Halved as in Model Garden, to match tf.nn.l2_loss.
    l2_regularizer = (tf_keras.regularizers.l2(l2_weight_decay / 2.0)
                      if l2_weight_decay else None)
    model = factory.build_groie_maskrcnn(input_specs, model_config,
                                         l2_regularizer)
    if self.task_config.freeze_backbone:
      model.backbone.trainable = False
    # Builds every weight through a symbolic call, as Model Garden does.
    model(tf_keras.Input(model_config.input_size),
          image_shape=tf_keras.layers.Input([2]), training=False)
    return model
