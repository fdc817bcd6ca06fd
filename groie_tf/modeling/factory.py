"""Builds Model Garden's Mask R-CNN with GRoIE, without copying its factory."""

from typing import Optional, Sequence

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


def build_groie_maskrcnn(
    input_specs: tf_keras.layers.InputSpec,
    model_config: groie_config.GRoIEMaskRCNN,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> maskrcnn_model.MaskRCNNModel:
  """Model Garden's Mask R-CNN with GRoIE where the config asks for it.

  Args:
    input_specs: the image input spec, `[None, H, W, 3]`.
    model_config: a `GRoIEMaskRCNN` (or any `MaskRCNN`, which gives the stock
      model).
    l2_regularizer: applied to GRoIE's kernels as to the rest of the model.

  Returns:
    A `MaskRCNNModel`.
  """
  stock = mg_factory.build_maskrcnn(input_specs, model_config, l2_regularizer)
  return with_groie(stock, model_config, l2_regularizer)


def build_weights(model: maskrcnn_model.MaskRCNNModel,
                  input_size: Sequence[int]) -> None:
  """Creates every weight of `model` by one symbolic call, as Model Garden's
  task does (its heads create their weights on first call)."""
  model(tf_keras.Input(list(input_size)),
        image_shape=tf_keras.layers.Input([2]), training=False)


def with_groie(
    stock: maskrcnn_model.MaskRCNNModel,
    model_config: groie_config.GRoIEMaskRCNN,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> maskrcnn_model.MaskRCNNModel:
  """`stock` (built by Model Garden's factory) with its aligners swapped.

  Its constructor arguments (`get_config()`) are reused with GRoIE in each
  branch whose block is set; a branch whose block is None keeps the stock
  aligner. The export module uses this too, so training and serving build
  the same model.

  Cascade R-CNN: Model Garden calls one `roi_aligner` for every stage, so all
  stages share the box GRoIE and its weights, as they share the stock
  aligner; each stage keeps its own detection head.
  """
  box_block = getattr(model_config, 'box_groie', None)
  mask_block = (getattr(model_config, 'mask_groie', None)
                if model_config.include_mask else None)
  if box_block is None and mask_block is None:
    return stock
  components = dict(stock.get_config())
  if box_block is not None:
    components['roi_aligner'] = GRoIE(
        kernel_regularizer=l2_regularizer, name='box_groie',
        **groie_config.groie_layer_kwargs(
            box_block, model_config.roi_aligner.crop_size))
  if mask_block is not None:
    components['mask_roi_aligner'] = GRoIE(
        kernel_regularizer=l2_regularizer, name='mask_groie',
        **groie_config.groie_layer_kwargs(
            mask_block, model_config.mask_roi_aligner.crop_size))
  return maskrcnn_model.MaskRCNNModel(**components)


def apply_backbone_freezing(model: maskrcnn_model.MaskRCNNModel,
                            model_config: groie_config.GRoIEMaskRCNN) -> None:
  """Applies the config's `frozen_stages` and `norm_eval` to `model`'s
  backbone, for training (inference uses moving statistics anyway)."""
  frozen_stages = getattr(model_config, 'frozen_stages', -1)
  backbone_freezing.freeze_stages(model.backbone, frozen_stages)
  if getattr(model_config, 'norm_eval', False):
    backbone_freezing.freeze_norm_statistics(model.backbone)


def _grid_roi_aligner(model_config: grid_config.GridRCNN,
                      regularizer) -> tf_keras.layers.Layer:
  """The grid branch's extractor: GRoIE, or Model Garden's aligner."""
  if model_config.grid_groie is None:
    return roi_aligner.MultilevelROIAligner(
        crop_size=model_config.grid_roi_aligner.crop_size,
        sample_offset=model_config.grid_roi_aligner.sample_offset)
  return GRoIE(kernel_regularizer=regularizer, name='grid_groie',
               **groie_config.groie_layer_kwargs(
                   model_config.grid_groie,
                   model_config.grid_roi_aligner.crop_size))


def with_grid_branch(
    model: maskrcnn_model.MaskRCNNModel, model_config: grid_config.GridRCNN,
    regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> grid_rcnn_model.GridRCNNModel:
  """`model` (Model Garden's, GRoIE swapped in) as a Grid R-CNN, its grid
  branch built from `model_config`. Training and export both use it."""
  return grid_rcnn_model.GridRCNNModel(
      grid_head=GridHead(kernel_regularizer=regularizer, name='grid_head',
                         **model_config.grid_head.as_dict()),
      grid_roi_aligner=_grid_roi_aligner(model_config, regularizer),
      max_num_grid=model_config.max_num_grid,
      jitter_amplitude=model_config.jitter_amplitude,
      pos_radius=model_config.pos_radius,
      **model.get_config())
