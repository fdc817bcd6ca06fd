"""The Model Garden task that trains and evaluates Grid R-CNN with GRoIE."""

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras
from official.core import task_factory
from official.vision.evaluation import coco_evaluator

from groie_tf.configs import grid_rcnn as grid_config
from groie_tf.ops import grid_points
from groie_tf.tasks import groie_maskrcnn

# The validation logs' key of the detections before grid refinement, and
# the prefix of their COCO metrics.
_BEFORE_GRID = 'coco_metric_before_grid'
BEFORE_GRID_PREFIX = 'before_grid_'


@task_factory.register_task_cls(grid_config.GridRCNNTask)
class GridRCNNTask(groie_maskrcnn.GRoIEMaskRCNNTask):
  """`GRoIEMaskRCNNTask` for Grid R-CNN: the losses get the grid loss
  (`grid_loss`, also a training metric); the builder gives the model its
  grid branch.

  Evaluation reports Model Garden's COCO metrics of the refined detections
  (`AP`, `AP75`, ...) and, for the same detections with their boxes before
  the grid's vote, the same metrics prefixed `before_grid_`: what the grid
  branch adds over the proposals it refines.
  """

  def build_losses(self, outputs: Mapping[str, Any],
                   labels: Mapping[str, Any],
                   aux_losses: Optional[Any] = None) -> Dict[str, tf.Tensor]:
    losses = dict(super().build_losses(outputs, labels, aux_losses))
    loss_params = self.task_config.losses
    grid = grid_points.grid_loss(
        outputs['grid_fused'], outputs['grid_unfused'],
        outputs['grid_targets'], outputs['grid_valid'] > 0,
        weight=loss_params.grid_weight)
    losses['grid_loss'] = grid
    losses['model_loss'] = losses['model_loss'] + grid
    losses['total_loss'] = losses['total_loss'] + loss_params.loss_weight * grid
    return losses

  def build_metrics(self, training: bool = True):
    metrics = super().build_metrics(training)
    if training:
      metrics.append(tf_keras.metrics.Mean('grid_loss', dtype=tf.float32))
    elif self.task_config.use_coco_metrics:
      self.coco_metric_before_grid = coco_evaluator.COCOEvaluator(
          annotation_file=self.task_config.annotation_file,
          include_mask=False, per_category_metrics=False)
    return metrics

  def _update_metrics(self, labels, outputs, logs):
    super()._update_metrics(labels, outputs, logs)
    if self.task_config.use_coco_metrics:
      # Model Garden's predictions for its evaluator, but the boxes.
      groundtruths, predictions = logs[self.coco_metric.name]
      logs[_BEFORE_GRID] = (groundtruths, dict(
          predictions,
          detection_boxes=outputs['detection_boxes_before_grid']))

  def aggregate_logs(self, state=None, step_outputs=None):
    if self.task_config.use_coco_metrics:
      if not state:  # the first step of an evaluation
        self.coco_metric_before_grid.reset_states()
      self.coco_metric_before_grid.update_state(*step_outputs[_BEFORE_GRID])
    return super().aggregate_logs(state, step_outputs)

  def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
    logs = super().reduce_aggregated_logs(aggregated_logs, global_step)
    if self.task_config.use_coco_metrics:
      logs.update({BEFORE_GRID_PREFIX + name: value for name, value
                   in self.coco_metric_before_grid.result().items()})
    return logs
