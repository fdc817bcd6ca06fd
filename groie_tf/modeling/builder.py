"""The one model builder: a model config becomes the Keras model.

Training (`tasks/groie_maskrcnn.py`), SavedModel export
(`serving/export.py`), the level analysis (through export), the demo and
the tests all call `build_model`. It builds Model Garden's Mask R-CNN with
Model Garden's factory, without copying it, then puts GRoIE in the
branches whose config block is set and, for a Grid R-CNN config, adds the
grid branch. A new detector is added here, in one place.
"""

from typing import Optional

import tf_keras
from official.vision.modeling import factory as mg_factory
from official.vision.modeling import maskrcnn_model
from official.vision.modeling.layers import roi_aligner

from groie_tf.configs import grid_rcnn as grid_config
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.layers import GRoIE
from groie_tf.layers import GridHead
from groie_tf.modeling import backbone_freezing
from groie_tf.modeling import grid_rcnn_model

Regularizer = Optional[tf_keras.regularizers.Regularizer]


def build_model(
    model_config: groie_config.GRoIEMaskRCNN,
    input_specs: tf_keras.layers.InputSpec,
    l2_regularizer: Regularizer = None,
    create_weights: bool = True) -> maskrcnn_model.MaskRCNNModel:
  """The detector `model_config` describes.

  Args:
    model_config: a `GRoIEMaskRCNN` or `GridRCNN` (any Model Garden
      `MaskRCNN` gives the stock model).
    input_specs: the image input spec, `[None, H, W, 3]`.
    l2_regularizer: Model Garden's weight decay, given to GRoIE's and the
      grid branch's kernels as to the rest of the model.
    create_weights: create every weight now, by symbolic calls (training).
      False leaves them to the model's first call: the export module's
      serving trace, since tf_keras would trace a symbolically called
      model's training branch when saving it, without its labels.

  Returns:
    A `MaskRCNNModel`, or a `GridRCNNModel` for a `GridRCNN` config.

  Model Garden's `MaskRCNNModel.get_config()` returns its constructor
  arguments: the stock model's are reused, with GRoIE in place of the
  aligner of each branch whose block is set (None keeps the stock aligner,
  the baseline). Cascade R-CNN: Model Garden calls one `roi_aligner` for
  every stage, so all stages share the box GRoIE and its weights, as they
  share the stock aligner.

  With `create_weights`, the stock model's weights are created first, by a
  symbolic call as Model Garden's task makes (its heads create their
  weights on first call), then GRoIE's and the grid branch's: under
  `task.seed` the initialisers draw their seeds in that order, which every
  seeded result so far depends on.
  """
  stock = mg_factory.build_maskrcnn(input_specs, model_config, l2_regularizer)
  if create_weights:
    _build_weights(stock, input_specs)
  components = dict(stock.get_config())
  box_block = getattr(model_config, 'box_groie', None)
  if box_block is not None:
    components['roi_aligner'] = groie_layer(
        box_block, model_config.roi_aligner.crop_size, l2_regularizer,
        'box_groie')
  mask_block = getattr(model_config, 'mask_groie', None)
  if model_config.include_mask and mask_block is not None:
    components['mask_roi_aligner'] = groie_layer(
        mask_block, model_config.mask_roi_aligner.crop_size, l2_regularizer,
        'mask_groie')
  if isinstance(model_config, grid_config.GridRCNN):
    model = grid_rcnn_model.GridRCNNModel(
        grid_head=GridHead(kernel_regularizer=l2_regularizer,
                           name='grid_head',
                           **model_config.grid_head.as_dict()),
        grid_roi_aligner=_grid_roi_aligner(model_config, l2_regularizer),
        max_num_grid=model_config.max_num_grid,
        jitter_amplitude=model_config.jitter_amplitude,
        pos_radius=model_config.pos_radius,
        **components)
  elif (components['roi_aligner'] is stock.roi_aligner and
        components['mask_roi_aligner'] is stock.mask_roi_aligner):
    return stock  # the baseline: nothing swapped
  else:
    model = maskrcnn_model.MaskRCNNModel(**components)
  if create_weights:
    _build_weights(model, input_specs)
  return model


def groie_layer(block: groie_config.GRoIEBlock, crop_size: int,
                l2_regularizer: Regularizer = None,
                name: Optional[str] = None) -> GRoIE:
  """The GRoIE layer of one config block."""
  return GRoIE(kernel_regularizer=l2_regularizer, name=name,
               **groie_config.groie_layer_kwargs(block, crop_size))


def _grid_roi_aligner(model_config: grid_config.GridRCNN,
                      l2_regularizer: Regularizer) -> tf_keras.layers.Layer:
  """The grid branch's extractor: GRoIE, or Model Garden's aligner."""
  crop_size = model_config.grid_roi_aligner.crop_size
  if model_config.grid_groie is None:
    return roi_aligner.MultilevelROIAligner(
        crop_size=crop_size,
        sample_offset=model_config.grid_roi_aligner.sample_offset)
  return groie_layer(model_config.grid_groie, crop_size, l2_regularizer,
                     'grid_groie')


def _build_weights(model: maskrcnn_model.MaskRCNNModel,
                   input_specs: tf_keras.layers.InputSpec) -> None:
  """Creates every weight of `model` by one symbolic call, as Model Garden's
  task does."""
  model(tf_keras.Input(list(input_specs.shape[1:])),
        image_shape=tf_keras.layers.Input([2]), training=False)


def apply_backbone_freezing(model: maskrcnn_model.MaskRCNNModel,
                            model_config: groie_config.GRoIEMaskRCNN) -> None:
  """Applies the config's `frozen_stages` and `norm_eval` to `model`'s
  backbone, for training (inference uses moving statistics anyway)."""
  backbone_freezing.freeze_stages(model.backbone,
                                  getattr(model_config, 'frozen_stages', -1))
  if getattr(model_config, 'norm_eval', False):
    backbone_freezing.freeze_norm_statistics(model.backbone)
