"""Model Garden's `MaskRCNNModel`, and our `GridRCNNModel`, for the
mmdetection layout."""

import tf_keras
from official.vision.modeling import maskrcnn_model

from groie_tf.modeling import grid_rcnn_model


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class MaskRCNNModel(maskrcnn_model.MaskRCNNModel):
  """Model Garden's Mask R-CNN, whatever its input size.

  Its `ProposalGenerator` makes mmdetection's anchors from the score maps
  it is given, so anchors passed in are ignored; and Model Garden's
  fallback, anchors from the static image size, is never run: images of
  any size (a dynamic `[B, None, None, 3]` input included, one canvas per
  image as mmdetection's test resize makes them) go through.
  """

  def call(self, images, image_shape, anchor_boxes=None, **kwargs):  # pylint: disable=arguments-differ
    del anchor_boxes  # Model Garden's own, or none: made by the generator
    return super().call(images, image_shape, anchor_boxes={}, **kwargs)


# Registered under its own name: groie_tf>GridRCNNModel is the
# model_garden layout's.
@tf_keras.utils.register_keras_serializable(
    package='groie_tf', name='MMDetectionGridRCNNModel')
class GridRCNNModel(MaskRCNNModel, grid_rcnn_model.GridRCNNModel):
  """`grid_rcnn_model.GridRCNNModel` (mmdetection's `GridRoIHead`: the box
  head only classifies, the grid branch refines the detections), whatever
  its input size, as `MaskRCNNModel`: its `call` runs first, then the grid
  model's steps (`_run_frcnn_head`, `_call_box_outputs`) inside Model
  Garden's `call`.
  """
