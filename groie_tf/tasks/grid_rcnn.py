"""The Model Garden task that trains and evaluates Grid R-CNN with GRoIE."""

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras
from official.core import task_factory

from groie_tf.configs import grid_rcnn as grid_config
from groie_tf.modeling import factory
from groie_tf.ops import grid_points
from groie_tf.tasks import groie_maskrcnn


@task_factory.register_task_cls(grid_config.GridRCNNTask)
class GridRCNNTask(groie_maskrcnn.GRoIEMaskRCNNTask):
  """`GRoIEMaskRCNNTask` for Grid R-CNN: the model gets the grid branch,
  the losses the grid loss (`grid_loss`, also a training metric)."""

  def _extended(self, model: tf_keras.Model, regularizer) -> tf_keras.Model:
    return factory.with_grid_branch(model, self.task_config.model,
                                    regularizer)

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
    return metrics
