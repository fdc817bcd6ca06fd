"""Inference: time and FLOPs per image, stage by stage, of the COCO models.

GRoIE's cost is at test time too: its shared 5x5 conv runs on every
proposal at every level (1000 x 4 x 49 positions x 256 x 256 x 25
multiply-adds: 642 GFLOP per image in the box branch) and on every
detection at 14 x 14 in the mask branch. Here one image goes through
`groie_maskrcnn_resnetfpn_coco` with Model Garden's stock aligners, with
GRoIE, and with GRoIE and fewer test proposals (the knob that trades its
cost), at `--inference_sizes` (default `INPUT_SIZES`: a COCO photo at the paper's scale (800 x 1067,
padded to a multiple of 64, and 512 x 512). Weights are random: the number
of proposals and detections is fixed by `test_num_proposals` and
`max_num_detections`, padded slots included, so the cost does not depend
on them.

Each stage of `MaskRCNNModel.call` (inference branch, `STAGES`) runs as a
`tf.function` of its own on the previous stage's outputs. `ms` is the
median per stage, `ratio` its time over the stock model's same stage, timed
in the same rounds; `whole model` is the model's call as one function, and
its row says how far the stages' detections are from the call's
(`staged_box_error_px`, `staged_mask_error`; float32 rounding, as the
graphs are optimised apart, and `staged_same_classes`): the stages are the
model's inference, not a cousin of it.
FLOPs are counted from each stage's graph (`benchmarks.flops`: RoIAlign's
sampling and NMS count 0).
"""

from typing import Callable, Dict, List, Mapping, Tuple

import numpy as np
from official.core import exp_factory
from official.core import task_factory
from official.vision.ops import anchor
import tensorflow as tf

from benchmarks import flops
from groie_tf import registry_imports  # pylint: disable=unused-import

EXPERIMENT = 'groie_maskrcnn_resnetfpn_coco'
INPUT_SIZES = ((832, 1088), (512, 512))
# (name, task.model override), the first the baseline of `ratio`.
VARIANTS = (
    ('stock aligners', {'box_groie': None, 'mask_groie': None}),
    ('GRoIE', {}),
    ('GRoIE, 300 test proposals',
     {'roi_generator': {'test_num_proposals': 300}}),
)
STAGES = ('backbone', 'FPN', 'RPN head', 'proposals (NMS)',
          'box RoI extractor', 'box head', 'detections (NMS)',
          'mask RoI extractor', 'mask head')


def build_model(size: Tuple[int, int], model_override: Dict,
                experiment: str = EXPERIMENT):
  """The experiment's model for one image of `size`, random weights."""
  config = exp_factory.get_exp_config(experiment)
  config.override({'task': {'model': dict(
      model_override, input_size=[*size, 3])}}, is_strict=True)
  return task_factory.get_task(config.task).build_model()


def staged(model, images: tf.Tensor
           ) -> List[Tuple[str, Callable[[], object], object]]:
  """`MaskRCNNModel.call` at inference, cut into `STAGES`.

  Returns:
    (stage, a function of no argument running it on the previous stages'
    outputs, its outputs), in order; the last outputs are the detections
    with `detection_masks`.
  """
  config = model.get_config()
  batch, height, width, _ = images.shape
  image_shape = _image_shape(images)
  anchors = {
      level: tf.tile(boxes[None], [batch, 1, 1, 1])
      for level, boxes in anchor.Anchor(
          min_level=config['min_level'], max_level=config['max_level'],
          num_scales=config['num_scales'],
          aspect_ratios=config['aspect_ratios'],
          anchor_size=config['anchor_size'],
          image_size=(height, width)).multilevel_boxes.items()}
  regression_weights = model._cascade_layer_to_weights[0]  # pylint: disable=protected-access
  per_class = not config['class_agnostic_bbox_pred']
  steps = []

  def add(stage, function, *args):
    compiled = tf.function(lambda: function(*args))
    steps.append((stage, compiled, compiled()))
    return steps[-1][2]

  backbone = add('backbone', model.backbone, images)
  fpn = add('FPN', model.decoder, backbone)
  rpn_scores, rpn_boxes = add('RPN head', model.rpn_head, fpn)
  rois = add('proposals (NMS)', lambda: model.roi_generator(
      rpn_boxes, rpn_scores, anchors, image_shape, False)[0])
  box_features = add('box RoI extractor', model.roi_aligner, fpn, rois)
  class_outputs, box_outputs = add('box head', model.detection_head[0],
                                   box_features)
  detections = add('detections (NMS)', lambda: model.detection_generator(
      box_outputs, class_outputs, rois, image_shape, regression_weights,
      bbox_per_class=per_class))
  mask_features = add('mask RoI extractor', model.mask_roi_aligner, fpn,
                      detections['detection_boxes'])
  masks = add('mask head', lambda: model.mask_head(
      [mask_features, detections['detection_classes']]))
  steps[-1] = (steps[-1][0], steps[-1][1],
               dict(detections, detection_masks=tf.nn.sigmoid(masks)))
  return steps


def _image_shape(images: tf.Tensor) -> tf.Tensor:
  """[B, 2]: each image fills the input, no padding."""
  batch, height, width, _ = images.shape
  return tf.constant([[height, width]] * batch, tf.float32)


def whole_model(model, images: tf.Tensor) -> Callable[[], object]:
  """The model's own inference call, as one function."""
  image_shape = _image_shape(images)
  return tf.function(lambda: model(images, image_shape, training=False))


def run(setup, precision):
  rows = []
  for size in setup.inference_sizes:
    images = tf.random.stateless_uniform([1, *size, 3], [0, 0],
                                         maxval=255.0)
    functions, counts, errors = {}, {}, {}
    with tf.device(setup.device):
      for variant, override in VARIANTS:
        model = build_model(size, override)
        steps = staged(model, images)
        for stage, function, _ in steps:
          functions[variant, stage] = function
          counts[variant, stage] = flops.graph_flops(
              function.get_concrete_function().graph)
        whole = whole_model(model, images)
        functions[variant, 'whole model'] = whole
        counts[variant, 'whole model'] = flops.graph_flops(
            whole.get_concrete_function().graph)
        errors[variant] = composition_error(steps[-1][2], whole())
      timed = setup.time(functions)
    baseline = VARIANTS[0][0]
    for (variant, stage), seconds in timed.items():
      rows.append(dict({
          'section': 'inference', 'case': f'1 image, {size[0]}x{size[1]}',
          'variant': variant, 'stage': stage, 'precision': precision,
          'ms': 1e3 * seconds, 'ratio': seconds / timed[baseline, stage],
          'gflop': counts[variant, stage] / 1e9},
          **(errors[variant] if stage == 'whole model' else {})))
  return rows


def composition_error(staged_outputs: Mapping[str, tf.Tensor],
                      whole_outputs: Mapping[str, tf.Tensor]
                      ) -> Dict[str, object]:
  """How far the last stage's detections are from the model call's."""
  def largest(name):
    return float(np.abs(np.asarray(staged_outputs[name]) -
                        np.asarray(whole_outputs[name])).max())
  return {
      'staged_box_error_px': largest('detection_boxes'),
      'staged_score_error': largest('detection_scores'),
      'staged_mask_error': largest('detection_masks'),
      'staged_same_classes': bool(
          np.array_equal(staged_outputs['detection_classes'],
                         whole_outputs['detection_classes']) and
          np.array_equal(staged_outputs['num_detections'],
                         whole_outputs['num_detections'])),
  }
