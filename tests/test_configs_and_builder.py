"""Experiments validate, and the builder puts GRoIE exactly where configured."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.core import task_factory
from official.vision.modeling.layers import roi_aligner

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import groie_maskrcnn as groie_config
from groie_tf.data import shapes
from groie_tf.layers import GRoIE
from groie_tf.modeling import builder
from groie_tf.modeling import grid_rcnn_model
from groie_tf.tasks import groie_maskrcnn as groie_task
from tests import small_model
from tests.tiny_experiment import tiny_experiment

EXPERIMENTS = ['groie_maskrcnn_resnetfpn_coco',
               'groie_fasterrcnn_resnetfpn_coco',
               'groie_cascadercnn_resnetfpn_coco']
IMAGE_SIZE = 128


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_registered_experiments_validate(name):
  config = exp_factory.get_exp_config(name)
  config.validate()
  assert isinstance(config.task, groie_config.GRoIEMaskRCNNTask)
  assert config.task.model.box_groie.pre_processing == 'conv5x5'
  assert not config.task.init_checkpoint  # nothing to download
  # The rest is Model Garden's own experiment.
  assert config.trainer.train_steps == 22500


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_coco_experiments_take_the_papers_box_head(name):
  """mmdetection's Shared2FCBBoxHead: 2 FC layers of 1024, no conv."""
  head = exp_factory.get_exp_config(name).task.model.detection_head
  assert (head.num_convs, head.num_fcs, head.fc_dims) == (0, 2, 1024)


def test_faster_and_cascade_variants():
  faster = exp_factory.get_exp_config('groie_fasterrcnn_resnetfpn_coco')
  assert not faster.task.model.include_mask and faster.task.model.mask_groie is None
  cascade = exp_factory.get_exp_config('groie_cascadercnn_resnetfpn_coco')
  assert cascade.task.model.roi_sampler.cascade_iou_thresholds == [0.6, 0.7]


@pytest.mark.parametrize('override,message', [
    ({'box_groie': {'aggregation': 'mean'}}, 'task.model.box_groie: aggregation'),
    ({'mask_groie': {'pre_processing': 'conv7x7'}},
     'task.model.mask_groie: pre_processing'),
    ({'box_groie': {'sampling_ratio': -1}}, 'box_groie: sampling_ratio must'),
    ({'layout': 'detectron2'}, r"task.model.layout must be one of \('model_garden', 'mmdetection'\)"),
    ({'layout': 'mmdetection', 'detection_head': {'num_convs': 4}},
     'task.model.layout is mmdetection, so task.model.detection_head.num_convs must be 0'),
    ({'box_groie': {'max_level': 7}}, 'outside the FPN levels'),
    ({'box_groie': {'level_selection': 'random', 'aggregation': 'concat'}},
     'nothing to concatenate'),
    ({'box_groie': {'canonical_size': -56.0}},
     'task.model.box_groie: canonical_size'),
    ({'frozen_stages': 5}, r'task.model.frozen_stages must be an int in -1..4'),
    ({'frozen_stages': -2}, r'task.model.frozen_stages'),
    ({'frozen_stages': 1, 'backbone': {'type': 'spinenet'}},
     r"task.model.frozen_stages and task.model.norm_eval need "
     r"task.model.backbone.type 'resnet'"),
    ({'norm_eval': True, 'backbone': {'type': 'mobilenet'}},
     r'task.model.backbone.type'),
])
def test_invalid_values_fail_validation_naming_the_field(override, message):
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  config.override({'task': {'model': override}})
  with pytest.raises(ValueError, match=message):
    config.validate()


def test_unknown_field_is_rejected():
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  with pytest.raises(KeyError, match='pre_procesing'):
    config.override({'task': {'model': {'box_groie': {'pre_procesing': 'x'}}}})


def small_model_config(**groie_blocks):
  config = groie_config.GRoIEMaskRCNN()
  config.override(small_model.small_maskrcnn_config(IMAGE_SIZE).as_dict())
  config.override(groie_blocks)
  return config


def build(config):
  tf_keras.backend.clear_session()
  return builder.build_model(
      config, tf_keras.layers.InputSpec(shape=[None, IMAGE_SIZE, IMAGE_SIZE, 3]),
      tf_keras.regularizers.l2(1e-4))


@pytest.mark.parametrize('box,mask', [(True, True), (True, False),
                                      (False, True), (False, False)])
def test_builder_places_groie_where_configured(box, mask):
  config = small_model_config()
  if not box:
    config.box_groie = None
  if not mask:
    config.mask_groie = None
  model = build(config)
  for layer, wanted, size in ((model.roi_aligner, box, 7),
                              (model.mask_roi_aligner, mask, 14)):
    expected = GRoIE if wanted else roi_aligner.MultilevelROIAligner
    assert type(layer) is expected  # pylint: disable=unidiomatic-typecheck
    assert layer.get_config()['crop_size'] == size
  if box:
    assert model.roi_aligner.kernel_regularizer is not None


@pytest.mark.parametrize('grid_groie', [True, False])
def test_a_grid_rcnn_config_builds_the_grid_branch(grid_groie):
  """Training and export both build through `builder.build_model`: a Grid
  R-CNN config gets its grid branch there, with the grid GRoIE or, with
  `grid_groie: null`, Model Garden's aligner at the grid's crop size."""
  config = exp_factory.get_exp_config('groie_gridrcnn_shapes').task.model
  if not grid_groie:
    config.grid_groie = None
  tf_keras.backend.clear_session()
  model = builder.build_model(config, tf_keras.layers.InputSpec(
      shape=[None, *config.input_size]))
  assert isinstance(model, grid_rcnn_model.GridRCNNModel)
  assert model.mask_head is None and isinstance(model.roi_aligner, GRoIE)
  assert model.grid_head.get_config()['num_convs'] == (
      config.grid_head.num_convs)
  expected = GRoIE if grid_groie else roi_aligner.MultilevelROIAligner
  assert type(model.grid_roi_aligner) is expected  # pylint: disable=unidiomatic-typecheck
  assert model.grid_roi_aligner.get_config()['crop_size'] == 14


def test_config_blocks_become_layer_arguments():
  config = small_model_config(box_groie={'aggregation': 'concat',
                                         'pre_processing': 'non_local',
                                         'share_pre_processing': False})
  layer = build(config).roi_aligner
  assert (layer.aggregation, layer.pre_processing,
          layer.share_pre_processing) == ('concat', 'non_local', False)


def test_task_is_registered_and_groie_weights_checkpoint(tmp_path):
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  config.task.model = small_model_config()
  task = task_factory.get_task(config.task)
  assert isinstance(task, groie_task.GRoIEMaskRCNNTask)
  model = task.build_model()
  assert isinstance(model.roi_aligner, GRoIE)
  for weight in model.roi_aligner.weights + model.mask_roi_aligner.weights:
    weight.assign(tf.random.normal(weight.shape))
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))
  restored = task.build_model()
  tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
  for name in ('roi_aligner', 'mask_roi_aligner'):
    for saved, loaded in zip(getattr(model, name).weights,
                             getattr(restored, name).weights):
      np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def test_the_task_gives_groie_model_gardens_l2_regularizer():
  """GRoIE's kernels decay like the rest of the model: Model Garden's
  `l2_weight_decay / 2 * sum(w**2)` (as tf.nn.l2_loss), in `model.losses`."""
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  config.task.model = small_model_config()
  decay = config.task.losses.l2_weight_decay
  assert decay > 0
  model = task_factory.get_task(config.task).build_model()
  # Regularisation losses are computed anew at each access: compare values.
  model_losses = [float(loss) for loss in model.losses]
  for aligner in (model.roi_aligner, model.mask_roi_aligner):
    kernels = [w for w in aligner.trainable_weights
               if w.name.endswith('kernel:0')]
    assert len(aligner.losses) == len(kernels) == 6  # conv + attention's 5
    want = decay / 2 * sum(float(tf.reduce_sum(k**2)) for k in kernels)
    assert float(tf.add_n(aligner.losses)) == pytest.approx(want, rel=1e-5)
    for loss in aligner.losses:
      assert any(abs(float(loss) - value) <= 1e-6 * abs(value)
                 for value in model_losses), 'not in model.losses'


def test_task_seed_makes_the_model_reproducible():
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  config.task.model = small_model_config()

  def first_weights(seed):
    config.task.seed = seed
    model = task_factory.get_task(config.task).build_model()
    return [w.numpy() for w in model.roi_aligner.weights[:2]]

  first, again, other = first_weights(3), first_weights(3), first_weights(4)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a, b)
  assert np.abs(first[0] - other[0]).max() > 0


def test_backbone_only_init_checkpoint_loads(tmp_path):
  config = exp_factory.get_exp_config('groie_maskrcnn_resnetfpn_coco')
  config.task.model = small_model_config()
  task = task_factory.get_task(config.task)
  source = task.build_model()
  path = tf.train.Checkpoint(backbone=source.backbone).save(
      str(tmp_path / 'backbone'))
  config.task.init_checkpoint = path
  config.task.init_checkpoint_modules = 'backbone'
  task = task_factory.get_task(config.task)
  target = task.build_model()
  task.initialize(target)
  for a, b in zip(source.backbone.weights, target.backbone.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_shapes_experiments_differ_only_in_their_aligners():
  groie = exp_factory.get_exp_config('groie_maskrcnn_shapes').as_dict()
  baseline = exp_factory.get_exp_config('maskrcnn_shapes').as_dict()
  assert baseline['task']['model'].pop('box_groie') is None
  assert baseline['task']['model'].pop('mask_groie') is None
  assert groie['task']['model'].pop('box_groie')['pre_processing'] == 'conv5x5'
  groie['task']['model'].pop('mask_groie')
  assert groie == baseline


def test_shapes_experiment_rejects_other_paths_without_changing_any():
  config = exp_factory.get_exp_config('groie_maskrcnn_shapes')
  config.validate()
  assert not config.task.train_data.input_path  # validation only validates
  assert not config.task.annotation_file
  mine = exp_factory.get_exp_config('groie_maskrcnn_shapes')
  mine.task.train_data.input_path = '/data/mine/train-*'
  with pytest.raises(ValueError, match=r'task.shapes_data selects the built-in'
                     r'.*task.train_data.input_path name other data'):
    mine.validate()
  mine.task.shapes_data = None
  mine.validate()  # the user's own data


def test_the_task_reads_the_built_in_data_set(tiny_shapes):
  config = tiny_experiment(tiny_shapes)
  config.lock()  # as train.py hands it over
  task = task_factory.get_task(config.task)
  directory = shapes.dataset_dir(tiny_shapes)
  assert task.task_config.train_data.input_path == directory + '/train-*'
  assert task.task_config.annotation_file == directory + '/instances_val.json'
  assert not config.task.train_data.input_path
  # The trainer passes the experiment's own (empty) data config.
  images, labels = next(iter(task.build_inputs(config.task.train_data)))
  assert images.shape[0] == config.task.train_data.global_batch_size
  assert labels['gt_boxes'].shape[0] == images.shape[0]


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
