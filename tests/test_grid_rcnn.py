"""Grid R-CNN through Model Garden's task: configs, the grid branch's
wiring in training and inference, a few training steps."""

import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory
from official.core import task_factory
from official.vision.modeling.layers import roi_aligner

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf import training
from groie_tf.configs import loading
from groie_tf.layers import GRoIE
from groie_tf.layers import GridHead
from groie_tf.modeling import grid_rcnn_model
from groie_tf.ops import grid_points
from tests.tiny_experiment import tiny_grid_experiment


@pytest.mark.parametrize('name', ['groie_gridrcnn_resnetfpn_coco',
                                  'gridrcnn_resnetfpn_coco',
                                  'groie_gridrcnn_shapes', 'gridrcnn_shapes'])
def test_the_experiments_are_mmdetections_grid_rcnn(name):
  config = loading.load_experiment(name)
  model = config.task.model
  assert not model.include_mask
  assert model.detection_head.class_agnostic_bbox_pred
  assert (model.detection_generator.nms_iou_threshold,
          model.detection_generator.pre_nms_score_threshold) == (0.3, 0.03)
  assert config.task.losses.frcnn_box_weight == 0.0
  assert config.task.losses.grid_weight == 15.0
  assert model.grid_roi_aligner.crop_size == 14
  assert (model.grid_groie is None) == name.startswith('grid')
  assert (model.box_groie is None) == name.startswith('grid')
  if 'coco' in name:
    assert (model.grid_head.num_convs, model.grid_head.point_channels,
            model.grid_head.norm_groups, model.max_num_grid) == (8, 64, 36,
                                                                 192)
    assert (model.jitter_amplitude, model.pos_radius) == (0.15, 1)
    # mmdetection's Grid RPN keeps 2000 proposals in training.
    assert (model.roi_generator.num_proposals,
            model.roi_generator.test_num_proposals) == (2000, 1000)


@pytest.mark.parametrize('override,message', [
    ({'grid_roi_aligner': {'crop_size': 7}}, r'grid_roi_aligner\.crop_size '
     'must be 14'),
    ({'grid_head': {'norm_groups': 10}}, r'task\.model\.grid_head: '
     r'norm_groups \(10\)'),
    ({'max_num_grid': 0}, r'max_num_grid must be >= 1'),
    ({'jitter_amplitude': 1.5}, r'jitter_amplitude must be in'),
    ({'include_mask': True}, r'include_mask: Grid R-CNN has no mask'),
    ({'grid_groie': {'aggregation': 'max'}}, r'task\.model\.grid_groie: '
     'aggregation'),
])
def test_bad_grid_options_name_their_field(override, message):
  config = exp_factory.get_exp_config('groie_gridrcnn_resnetfpn_coco')
  config.override({'task': {'model': override}})
  with pytest.raises(ValueError, match=message):
    config.validate()


@pytest.mark.parametrize('groie', [True, False])
def test_a_positive_is_pooled_from_its_own_image(groie):
  """One positive, in the second image; every image's features differ.
  The grid head sees that RoI's features from that image: pooling it from
  the first image (or the box of another row) would change them."""
  rng = np.random.default_rng(0)
  features = {str(l): tf.constant(rng.normal(size=(2, 64 // 2**(l - 2),
                                                   64 // 2**(l - 2), 12)),
                                  tf.float32) for l in range(2, 7)}
  rois = tf.constant(rng.uniform(0, 20, (2, 3, 4)) + [[[0, 0, 30, 30]]],
                     tf.float32)
  gt = rois + 2.0
  classes = tf.constant([[0, 0, -1], [0, 3, 0]])
  aligner = (GRoIE(crop_size=14) if groie else
             roi_aligner.MultilevelROIAligner(crop_size=14))
  head = GridHead(num_convs=1, point_channels=2, norm_groups=9)
  outputs = grid_rcnn_model.grid_training_outputs(
      aligner, head, features, rois, gt, classes,
      tf.constant([[64.0, 64.0], [64.0, 64.0]]), max_num=1,
      jitter_amplitude=0.0, radius=1)
  assert outputs['grid_valid'].numpy().tolist() == [1.0]
  pooled = aligner(features, rois)
  want = head(pooled[1:2, 1], training=True)
  np.testing.assert_allclose(outputs['grid_fused'].numpy(),
                             want['fused'].numpy(), rtol=1e-5, atol=1e-5)
  other = head(pooled[0:1, 1], training=True)['fused'].numpy()
  assert np.abs(other - want['fused'].numpy()).max() > 1e-3
  np.testing.assert_array_equal(
      outputs['grid_targets'].numpy(),
      grid_points.grid_targets(rois[1:2, 1], gt[1:2, 1]).numpy())



def test_evaluation_scores_the_boxes_before_and_after_the_grid(tiny_shapes):
  """Through the task's own evaluation: a stand-in model whose refined
  boxes are the ground truth and whose boxes before the vote are moved by
  half their size (IoU 1/7, under every COCO threshold). Each set of boxes
  must reach its own evaluator: AP 1, before_grid_AP 0."""
  config = tiny_grid_experiment(tiny_shapes)
  task = task_factory.get_task(config.task)
  task.build_metrics(training=False)
  state = None
  for batch in task.build_inputs(config.task.validation_data):
    labels = batch[1]
    truth = labels['groundtruths']
    scale = tf.tile(labels['image_info'][:, 2:3, :], [1, 1, 2])
    boxes = tf.cast(truth['boxes'], tf.float32) * scale
    size = boxes[..., 2:] - boxes[..., :2]
    outputs = {'detection_boxes': boxes,
               'detection_boxes_before_grid': boxes + 0.5 * tf.concat(
                   [size, size], -1),
               'detection_scores': tf.ones_like(boxes[..., 0]),
               'detection_classes': truth['classes'],
               'num_detections': truth['num_detections']}
    logs = task.validation_step(batch, lambda *args, **kwargs: outputs)
    state = task.aggregate_logs(state, logs)
  metrics = task.reduce_aggregated_logs(state)
  assert metrics['AP'] > 0.99 and metrics['AP75'] > 0.99
  assert metrics['before_grid_AP'] == 0.0
  assert metrics['before_grid_AP50'] == 0.0
  table = training.format_metrics(metrics).splitlines()
  assert [line.split()[:4] for line in table[1:]] == [
      ['box', '1.0000', '1.0000', '1.0000'],
      ['box', 'before', 'grid', '0.0000']]


def test_the_grid_branch_trains_under_xla():
  """The training branch (sampling, jitter, targets, GRoIE's gather path,
  GridHead, loss and gradients) compiles with XLA and gives what it gives
  eagerly. Every positive is drawn and none is jittered, so only the picks'
  random order differs, and the loss and its gradients are sums over them."""
  rng = np.random.default_rng(4)
  features = {str(l): tf.constant(rng.normal(size=(2, 64 >> (l - 2),
                                                   64 >> (l - 2), 12)),
                                  tf.float32) for l in range(2, 7)}
  corners = rng.uniform(0, 150, (2, 6, 2))
  rois = tf.constant(np.concatenate(
      [corners, corners + rng.uniform(8, 100, (2, 6, 2))], -1), tf.float32)
  gt = rois + tf.constant(rng.uniform(-6, 6, (2, 6, 4)), tf.float32)
  classes = tf.constant([[1, 0, 3, 2, 0, -1], [0, 2, 2, 0, 1, 0]])
  aligner = GRoIE(crop_size=14)
  head = GridHead(num_convs=2, point_channels=2, norm_groups=9)

  def loss_and_gradients():
    with tf.GradientTape() as tape:
      outputs = grid_rcnn_model.grid_training_outputs(
          aligner, head, features, rois, gt, classes,
          tf.constant([[256.0, 256.0]] * 2), max_num=12,
          jitter_amplitude=0.0, radius=1)
      loss = grid_points.grid_loss(outputs['grid_fused'],
                                   outputs['grid_unfused'],
                                   outputs['grid_targets'],
                                   outputs['grid_valid'] > 0)
    weights = head.trainable_weights + aligner.trainable_weights
    return loss, tape.gradient(loss, weights), outputs['grid_valid']

  eager_loss, eager_grads, valid = loss_and_gradients()
  assert valid.numpy().sum() == 6  # the six positives, each once
  xla_loss, xla_grads, _ = tf.function(loss_and_gradients,
                                       jit_compile=True)()
  assert eager_loss.numpy() > 0
  # XLA's CPU exp and log1p are approximations: the sigmoid cross-entropy
  # alone moved by 6e-5 (relative) here, the loss of these heatmaps (most
  # logits near the -4.6 prior) by 2.7e-4; the pooled features and the
  # head's outputs agree to float32 rounding.
  np.testing.assert_allclose(xla_loss.numpy(), eager_loss.numpy(),
                             rtol=1e-3)
  assert [g is None for g in xla_grads] == [g is None for g in eager_grads]
  reached = [(x, e) for x, e in zip(xla_grads, eager_grads) if e is not None]
  assert len(reached) > 0.8 * len(eager_grads)
  for xla, eager in reached:
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-3,
                               atol=1e-5 * np.abs(eager.numpy()).max())


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
