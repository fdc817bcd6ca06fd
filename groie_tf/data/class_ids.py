"""Checks that the data's class ids fit `task.model.num_classes`.

Model Garden never compares them. A class id >= num_classes crashes the
mask head's gather at step 1, deep in the graph, or, with masks off, trains
to the end with that class silently wrong (its one-hot row is all zeros).
Class ids run from 1; 0 is the background, so num_classes is the largest
id + 1.
"""

import json
from typing import Mapping

import tensorflow as tf

from groie_tf.errors import DataError

# Starts the message of a bad id found while training (an op error, which
# `groie_tf.training` reports as a data error).
CLASS_ID_ERROR = 'Class id out of range:'


def _advice(num_classes: int) -> str:
  return (f'task.model.num_classes is {num_classes}, which allows class ids '
          f'1..{num_classes - 1} (0 is the background). Set it to the largest '
          'class id + 1.')


def check_annotation_file(annotation_file: str, num_classes: int) -> None:
  """Raises DataError if a category of a COCO file does not fit num_classes."""
  with tf.io.gfile.GFile(annotation_file) as f:
    categories = json.load(f).get('categories', [])
  too_large = [c for c in categories if c['id'] >= num_classes]
  if too_large:
    top = max(too_large, key=lambda c: c['id'])
    raise DataError(
        f'{annotation_file} has {len(too_large)} categor'
        f'{"y" if len(too_large) == 1 else "ies"} with an id >= '
        f'{num_classes}, up to {top["id"]} ({top.get("name", "?")!r}); '
        f'{_advice(num_classes)}')


def checking_class_ids(dataset: tf.data.Dataset, num_classes: int,
                       source: str) -> tf.data.Dataset:
  """`dataset` of Model Garden's parsed Mask R-CNN batches, each checked.

  Args:
    dataset: yields (images, labels); labels hold `gt_classes` (training,
      -1 padded) or `groundtruths/classes` (evaluation, -1 padded).
    num_classes: the model's, background included.
    source: names the data in the message (its input path).

  Returns:
    The same batches; iterating fails with an InvalidArgumentError whose
    message starts with CLASS_ID_ERROR at a batch holding an id >=
    num_classes.
  """
  message = (f'{CLASS_ID_ERROR} the data {source} has a class id >= '
             f'{num_classes} (the largest follows). {_advice(num_classes)}')

  def check(images, labels: Mapping):
    classes = (labels['gt_classes'] if 'gt_classes' in labels else
               labels['groundtruths']['classes'])
    largest = tf.reduce_max(classes)
    with tf.control_dependencies([tf.debugging.Assert(
        largest < num_classes, [message, largest], summarize=1)]):
      return tf.identity(images), labels

  return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE)
