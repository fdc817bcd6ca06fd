"""COCO evaluation with mmdetection's mask paste (the mmdetection layout).

Model Garden's `COCOEvaluator` pastes every mask with its own rule
(`mask_ops.paste_instance_masks`), inside `evaluate`, with no way to give
it another. This subclass converts the predictions with mmdetection's
paste (`groie_tf.ops.mask_paste`) and scores them with pycocotools as
Model Garden's does (box, then mask; per-category metrics by Model
Garden's own method); keypoints are not supported.
"""

from typing import Dict, List

import numpy as np
from official.vision.evaluation import coco_evaluator
from official.vision.evaluation import coco_utils
from pycocotools import cocoeval
from pycocotools import mask as mask_api

from groie_tf.ops import mask_paste


def coco_predictions(predictions) -> List[Dict]:
  """Model Garden's accumulated predictions (boxes already in original
  pixels) as COCO results, masks pasted as mmdetection pastes them."""
  results = []
  for batch in range(len(predictions['source_id'])):
    for image in range(predictions['source_id'][batch].shape[0]):
      boxes = predictions['detection_boxes'][batch][image]  # yxyx
      height, width = predictions['image_info'][batch][image, 0].astype(int)
      masks = None
      if 'detection_masks' in predictions:
        masks = mask_paste.paste_masks(
            predictions['detection_masks'][batch][image], boxes, height,
            width) >= mask_paste.MASK_THRESHOLD
      for k, (y1, x1, y2, x2) in enumerate(boxes):
        result = {
            'image_id': predictions['source_id'][batch][image],
            'category_id': predictions['detection_classes'][batch][image, k],
            'bbox': [x1, y1, x2 - x1, y2 - y1],
            'score': predictions['detection_scores'][batch][image, k]}
        if masks is not None:
          result['segmentation'] = mask_api.encode(
              np.asfortranarray(masks[k].astype(np.uint8)))
        results.append(result)
  for i, result in enumerate(results):
    result['id'] = i + 1
  return results


class MMDetectionCOCOEvaluator(coco_evaluator.COCOEvaluator):
  """Model Garden's COCO evaluator, pasting masks as mmdetection does."""

  def __init__(self, *args, **kwargs):
    if kwargs.get('include_keypoint'):
      raise ValueError('The mmdetection layout evaluates boxes and masks, not '
                       'keypoints.')
    super().__init__(*args, **kwargs)

  def evaluate(self):
    if self._annotation_file:
      coco_gt = self._coco_gt
    else:
      coco_gt = coco_utils.COCOWrapper(
          eval_type='mask' if self._include_mask else 'box',
          gt_dataset=coco_utils.convert_groundtruths_to_coco_dataset(
              self._groundtruths))
    results = coco_predictions(self._predictions)
    coco_dt = coco_gt.loadRes(predictions=results)
    image_ids = [result['image_id'] for result in results]
    evaluations = {}
    for kind in ('bbox', 'segm') if self._include_mask else ('bbox',):
      evaluation = cocoeval.COCOeval(coco_gt, coco_dt, iouType=kind)
      evaluation.params.imgIds = image_ids
      evaluation.params.maxDets[2] = self.max_num_eval_detections
      evaluation.evaluate()
      evaluation.accumulate()
      evaluation.summarize()
      evaluations[kind] = evaluation
    stats = np.hstack([e.stats for e in evaluations.values()])
    metrics = {name: stats[i].astype(np.float32)
               for i, name in enumerate(self._metric_names)}
    if self._per_category_metrics:
      metrics.update(self._retrieve_per_category_metrics(evaluations['bbox']))
      if self._include_mask:
        metrics.update(self._retrieve_per_category_metrics(
            evaluations['segm'], prefix='mask'))
    return metrics
