"""A CPU-sized shapes experiment for tests that train."""

import os

from official.core import exp_factory

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import experiments
from groie_tf.data import shapes


def tiny_override(shapes_data, batch_size: int = 2, train_steps: int = 2):
  """The config delta that shrinks a shapes experiment to seconds per step.

  The RoI and mask samplers are given room for every candidate (32
  proposals, at most 6 objects), so a training step on a fixed batch is
  deterministic: they take all candidates instead of a random subset.
  """
  size = shapes_data.image_size
  return {
      'task': {
          'shapes_data': shapes_data.as_dict(),
          'model': {
              'input_size': [size, size, 3],
              'backbone': {'resnet': {'depth_multiplier': 0.25}},
              'roi_generator': {'pre_nms_top_k': 200, 'num_proposals': 32,
                                'test_pre_nms_top_k': 200,
                                'test_num_proposals': 32},
              'roi_sampler': {'num_sampled_rois': 128,
                              'foreground_fraction': 0.5},
              'mask_sampler': {'num_sampled_masks': 64},
              'detection_generator': {'max_num_detections': 10},
          },
          'train_data': {'global_batch_size': batch_size,
                         'shuffle_buffer_size': 8},
          'validation_data': {'global_batch_size': batch_size},
      },
      'trainer': {'train_steps': train_steps, 'steps_per_loop': 1,
                  'summary_interval': 1, 'checkpoint_interval': 1,
                  'validation_steps': 1, 'validation_interval': train_steps},
  }


def tiny_experiment(shapes_data, groie: bool = True, batch_size: int = 2,
                    train_steps: int = 2, gc_backbone: bool = False,
                    mmdetection: bool = False):
  """`groie_maskrcnn_shapes` (or its baseline, or their GC-Net twins),
  in the mmdetection layout if asked, shrunk by `tiny_override`."""
  name = (('groie_' if groie else '') + ('gcnet_' if gc_backbone else '') +
          'maskrcnn_shapes')
  config = exp_factory.get_exp_config(name)
  if mmdetection:
    experiments.in_mmdetection_layout(config)
  override = tiny_override(shapes_data, batch_size, train_steps)
  if mmdetection:
    size = shapes_data.image_size
    override['task']['model']['test_scale'] = [size, size]
  if gc_backbone:
    backbone = override['task']['model'].pop('backbone')
    override['task']['model']['backbone'] = {'gc_resnet': backbone['resnet']}
  config.override(override, is_strict=True)
  config.validate()
  return config


def tiny_own_data_experiment(shapes_data, train_steps: int = 2, **task):
  """`tiny_experiment` reading the built-in set's files as a user's data
  (`shapes_data` null, the paths and the annotation file given), then
  `task`'s fields overridden."""
  directory = shapes.dataset_dir(shapes_data)
  config = tiny_experiment(shapes_data, train_steps=train_steps)
  config.override({'task': {
      'shapes_data': None,
      'train_data': {'input_path': os.path.join(directory, 'train-*')},
      'validation_data': {'input_path': os.path.join(directory, 'val-*')},
      'annotation_file': os.path.join(directory, 'instances_val.json')}})
  config.override({'task': task})
  return config


def tiny_grid_experiment(shapes_data, groie: bool = True,
                         max_num_grid: int = 16, mmdetection: bool = False):
  """`groie_gridrcnn_shapes` (or its baseline), in the mmdetection layout
  if asked, shrunk by `tiny_override`."""
  config = exp_factory.get_exp_config(
      'groie_gridrcnn_shapes' if groie else 'gridrcnn_shapes')
  if mmdetection:
    experiments.in_mmdetection_layout(config)
  override = tiny_override(shapes_data)
  if mmdetection:
    size = shapes_data.image_size
    override['task']['model']['test_scale'] = [size, size]
  config.override(override, is_strict=True)
  config.task.model.max_num_grid = max_num_grid
  config.validate()
  return config
