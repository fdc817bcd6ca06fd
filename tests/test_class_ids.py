"""Class ids that do not fit `num_classes` stop a run before it trains."""

import os
import sys

import pytest
import tensorflow as tf
from official.core import task_factory

from groie_tf.data import class_ids
from groie_tf.data import shapes
from tests.tiny_experiment import tiny_experiment

_NUM_SHAPE_CLASSES = len(shapes.CLASS_NAMES)  # ids 1..4


def test_an_annotation_file_with_larger_ids_is_refused(tiny_shapes):
  annotations = os.path.join(shapes.dataset_dir(tiny_shapes),
                             'instances_val.json')
  class_ids.check_annotation_file(annotations, _NUM_SHAPE_CLASSES + 1)
  with pytest.raises(ValueError, match=(
      r"instances_val.json has 1 category with an id >= 4, up to 4 "
      r"\('star'\); task.model.num_classes is 4, which allows class ids "
      r"1..3 \(0 is the background\)")):
    class_ids.check_annotation_file(annotations, _NUM_SHAPE_CLASSES)


@pytest.mark.parametrize('include_mask', [True, False])
@pytest.mark.parametrize('training', [True, False])
def test_a_batch_with_larger_ids_fails_naming_num_classes(
    tiny_shapes, include_mask, training):
  """With masks off, the stock pipeline would train on, silently wrong."""
  def first_batch(num_classes):
    config = tiny_experiment(tiny_shapes)
    config.override({'task': {'model': {'num_classes': num_classes,
                                        'include_mask': include_mask}}})
    task = task_factory.get_task(config.task)
    data = (task.task_config.train_data if training else
            task.task_config.validation_data)
    return next(iter(task.build_inputs(data)))

  first_batch(_NUM_SHAPE_CLASSES + 1)
  # The first batch of the tiny set has a star (id 4) in either split.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=class_ids.CLASS_ID_ERROR + r'.* >= 4 .*'
                     r'task.model.num_classes is 4'):
    first_batch(_NUM_SHAPE_CLASSES)


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
