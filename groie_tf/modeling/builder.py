"""The one model builder: a model config becomes the Keras model.

Training (`tasks/groie_maskrcnn.py`), SavedModel export
(`serving/export.py`), the level analysis (through export), the demo and
the tests all call `build_model`. It builds Model Garden's Mask R-CNN with
Model Garden's factory, without copying it, then puts GRoIE in the
branches whose config block is set and, for a Grid R-CNN config, adds the
grid branch; in the mmdetection layout (`task.model.layout`), it gives the
factory mmdetection's backbone and FPN and swaps in mmdetection's heads,
proposals and RoI extractors. A new detector is added here, in one place,
which is also the one place where config fields become layer arguments.
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
from groie_tf.modeling import gc_resnet
from groie_tf.modeling import grid_rcnn_model
from groie_tf.modeling import resnet
from groie_tf.modeling.mmdetection_layout import fpn as mmdet_fpn
from groie_tf.modeling.mmdetection_layout import heads as mmdet_heads
from groie_tf.modeling.mmdetection_layout import model as mmdet_model
from groie_tf.modeling.mmdetection_layout import proposals as mmdet_proposals

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
    A `MaskRCNNModel`, or a `GridRCNNModel` for a `GridRCNN` config (the
    mmdetection layout's own classes in that layout).

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
  mmdetection = getattr(model_config, 'layout', None) == 'mmdetection'
  if mmdetection:
    # Any image size: mmdetection's test resize gives each image its own
    # canvas (`groie_tf.data.mmdetection_resize`).
    input_specs = tf_keras.layers.InputSpec(
        shape=[input_specs.shape[0], None, None, input_specs.shape[-1]])
    # Model Garden's factory with mmdetection's backbone and FPN; its heads
    # and generators are replaced below, before any weight exists.
    stock = mg_factory.build_maskrcnn(
        input_specs, model_config, l2_regularizer,
        backbone=_mmdetection_backbone(input_specs, model_config,
                                       l2_regularizer),
        decoder=mmdet_fpn.FPN(
            min_level=model_config.min_level,
            max_level=model_config.max_level,
            num_filters=model_config.decoder.fpn.num_filters,
            kernel_regularizer=l2_regularizer, name='fpn'))
    components = dict(stock.get_config(),
                      **_mmdetection_parts(model_config, stock,
                                           l2_regularizer))
  else:
    stock = mg_factory.build_maskrcnn(input_specs, model_config,
                                      l2_regularizer)
    if create_weights:
      _build_weights(stock, input_specs)
    components = dict(stock.get_config())
  box_block = getattr(model_config, 'box_groie', None)
  if box_block is not None:
    components['roi_aligner'] = groie_layer(
        box_block, model_config.roi_aligner.crop_size, l2_regularizer,
        'box_groie')
  elif mmdetection:
    components['roi_aligner'] = _single_level_extractor(
        model_config.roi_aligner.crop_size, 'box_roi_extractor')
  mask_block = getattr(model_config, 'mask_groie', None)
  if model_config.include_mask and mask_block is not None:
    components['mask_roi_aligner'] = groie_layer(
        mask_block, model_config.mask_roi_aligner.crop_size, l2_regularizer,
        'mask_groie')
  elif model_config.include_mask and mmdetection:
    components['mask_roi_aligner'] = _single_level_extractor(
        model_config.mask_roi_aligner.crop_size, 'mask_roi_extractor')
  if isinstance(model_config, grid_config.GridRCNN):
    grid_model = (mmdet_model.GridRCNNModel if mmdetection else
                  grid_rcnn_model.GridRCNNModel)
    model = grid_model(
        grid_head=GridHead(kernel_regularizer=l2_regularizer,
                           name='grid_head',
                           **model_config.grid_head.as_dict()),
        grid_roi_aligner=_grid_roi_aligner(model_config, l2_regularizer,
                                           mmdetection),
        max_num_grid=model_config.max_num_grid,
        jitter_amplitude=model_config.jitter_amplitude,
        pos_radius=model_config.pos_radius,
        **components)
  elif (not mmdetection and
        components['roi_aligner'] is stock.roi_aligner and
        components['mask_roi_aligner'] is stock.mask_roi_aligner):
    return stock  # the baseline: nothing swapped
  elif mmdetection:
    model = mmdet_model.MaskRCNNModel(**components)
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


def _mmdetection_backbone(input_specs: tf_keras.layers.InputSpec,
                          model_config: groie_config.GRoIEMaskRCNN,
                          l2_regularizer: Regularizer) -> tf_keras.Model:
  """The config's ResNet (plain or GC), padded as PyTorch pads."""
  build = {'resnet': resnet.build_resnet,
           'gc_resnet': gc_resnet.build_gc_resnet}[model_config.backbone.type]
  return build(input_specs, model_config.backbone,
               model_config.norm_activation, l2_regularizer,
               pytorch_padding=True)


def _mmdetection_parts(model_config: groie_config.GRoIEMaskRCNN,
                       stock: maskrcnn_model.MaskRCNNModel,
                       l2_regularizer: Regularizer):
  """mmdetection's heads and generators, as `MaskRCNNModel` arguments."""
  anchor = model_config.anchor
  generator = model_config.roi_generator
  head = model_config.detection_head
  parts = dict(
      rpn_head=mmdet_heads.RPNHead(
          min_level=model_config.min_level,
          max_level=model_config.max_level,
          num_anchors_per_location=(len(anchor.aspect_ratios) *
                                    anchor.num_scales),
          num_filters=model_config.rpn_head.num_filters,
          kernel_regularizer=l2_regularizer, name='rpn_head'),
      roi_generator=mmdet_proposals.ProposalGenerator(
          min_level=model_config.min_level,
          max_level=model_config.max_level,
          anchor_size=anchor.anchor_size, num_scales=anchor.num_scales,
          aspect_ratios=anchor.aspect_ratios,
          pre_nms_top_k=generator.pre_nms_top_k,
          nms_iou_threshold=generator.nms_iou_threshold,
          num_proposals=generator.num_proposals,
          test_pre_nms_top_k=generator.test_pre_nms_top_k,
          test_nms_iou_threshold=generator.test_nms_iou_threshold,
          test_num_proposals=generator.test_num_proposals,
          name='roi_generator'),
      detection_head=mmdet_heads.Shared2FCBBoxHead(
          num_classes=model_config.num_classes, fc_dims=head.fc_dims,
          num_fcs=head.num_fcs,
          # Grid R-CNN's box head only classifies (with_reg=False).
          with_reg=not isinstance(model_config, grid_config.GridRCNN),
          kernel_regularizer=l2_regularizer, name='detection_head'),
      detection_generator=mmdet_proposals.DetectionGenerator(
          **stock.detection_generator.get_config()))
  if model_config.include_mask:
    parts['mask_head'] = mmdet_heads.FCNMaskHead(
        num_classes=model_config.num_classes,
        num_convs=model_config.mask_head.num_convs,
        num_filters=model_config.mask_head.num_filters,
        kernel_regularizer=l2_regularizer, name='mask_head')
  return parts


def _single_level_extractor(crop_size: int, name: str) -> GRoIE:
  """mmdetection's `SingleRoIExtractor` of its R-CNN configs: each RoI
  pooled from the one level of its size (P2-P5, `finest_scale` 56, which is
  GRoIE's 'heuristic' rule), RoIAlign with adaptive sampling, aligned."""
  return GRoIE(crop_size=crop_size, min_level=2, max_level=5,
               sampling_ratio=0, aligned=True, level_selection='heuristic',
               aggregation='sum', pre_processing='none',
               post_processing='none', name=name)


def _grid_roi_aligner(model_config: grid_config.GridRCNN,
                      l2_regularizer: Regularizer,
                      mmdetection: bool) -> tf_keras.layers.Layer:
  """The grid branch's extractor: GRoIE, or without a `grid_groie` block
  Model Garden's aligner (mmdetection's `SingleRoIExtractor` in the
  mmdetection layout: its Grid R-CNN configs pool 14x14 from P2-P5 with
  adaptive sampling)."""
  crop_size = model_config.grid_roi_aligner.crop_size
  if model_config.grid_groie is None and mmdetection:
    return _single_level_extractor(crop_size, 'grid_roi_extractor')
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
