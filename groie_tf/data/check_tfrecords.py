"""Checks Mask R-CNN TFRecords before a long run reads them.

    python -m groie_tf.data.check_tfrecords --pattern='/data/coco/train-*' \
        --num_classes=91

TensorFlow reports a damaged file in the middle of training as
"corrupted record at 1234", without the file. This reads every record of
every file matching `--pattern` with Model Garden's own decoder and stops at
the first problem with the file, the record index and what is wrong: one
`error:` line and exit status 2, as the other tools (`groie_tf.cli`).
"""

import re
from typing import Optional, Sequence

from absl import flags
import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder

from groie_tf.errors import DataError


def _tf_message(error: Exception) -> str:
  """The first line of a TensorFlow error, without its op and graph names."""
  text = str(error).splitlines()[0]
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text)
  # Eager errors end with "[Op:Name] name: " (the op's, usually empty).
  return re.sub(r'\s*\[Op:\w+\](\s*name:.*)?$', '', text).strip()


def _check_example(decoded, include_mask: bool,
                   num_classes: Optional[int]) -> str:
  """'' if a decoded example is consistent, else what is wrong with it."""
  boxes = decoded['groundtruth_boxes'].numpy()
  classes = decoded['groundtruth_classes'].numpy()
  if num_classes is not None and len(classes) and (
      classes.max() >= num_classes or classes.min() < 1):
    return (f'class ids {sorted(set(classes.tolist()))} do not fit '
            f'num_classes={num_classes}: ids run from 1 to num_classes - 1 '
            '(0 is the background)')
  num_boxes = boxes.shape[0]
  counts = {'groundtruth_classes': decoded['groundtruth_classes'].shape[0],
            'groundtruth_is_crowd': decoded['groundtruth_is_crowd'].shape[0]}
  if include_mask:
    counts['groundtruth_instance_masks'] = (
        decoded['groundtruth_instance_masks'].shape[0])
  for name, count in counts.items():
    if count != num_boxes:
      return f'{num_boxes} boxes but {count} {name}'
  if num_boxes and ((boxes < 0).any() or (boxes > 1).any() or
                    (boxes[:, 2] < boxes[:, 0]).any() or
                    (boxes[:, 3] < boxes[:, 1]).any()):
    return ('boxes must be normalized [ymin, xmin, ymax, xmax] within [0, 1]; '
            f'got {boxes.min():.3g}..{boxes.max():.3g}')
  if include_mask and num_boxes:
    image_hw = tuple(decoded['image'].shape[:2])
    mask_hw = tuple(decoded['groundtruth_instance_masks'].shape[1:3])
    if image_hw != mask_hw:
      return f'image is {image_hw} but its masks are {mask_hw}'
  return ''


def check_tfrecords(pattern: str, include_mask: bool = True,
                    num_classes: Optional[int] = None) -> int:
  """Returns the number of records matching `pattern`, all of them valid.

  With `num_classes` (the model's, background included), class ids must lie
  in 1..num_classes - 1.

  Raises:
    DataError: naming the file, the record and the problem, if a file is
      missing, damaged, or holds an example Model Garden cannot train on.
  """
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise DataError(f'No TFRecord file matches {pattern!r}.')
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=include_mask)
  total = 0
  for path in files:
    index = -1
    try:
      for index, record in enumerate(tf.data.TFRecordDataset(path)):
        try:
          problem = _check_example(decoder.decode(record), include_mask,
                                   num_classes)
        except (tf.errors.InvalidArgumentError, ValueError) as error:
          problem = _tf_message(error)
        if problem:
          raise DataError(f'{path}: record {index} is malformed: {problem}')
    except tf.errors.DataLossError as error:
      raise DataError(
          f'{path}: record {index + 1} is corrupt (not a TFRecord, or the file '
          f'is truncated): {_tf_message(error)}') from None
    total += index + 1
  return total


def main(argv: Sequence[str]) -> None:
  del argv
  pattern = flags.FLAGS.pattern
  count = check_tfrecords(pattern, flags.FLAGS.include_mask,
                          flags.FLAGS.num_classes)
  print(f'{count} valid records in {pattern}')


if __name__ == '__main__':
  # The command line's error handling, for this module run as a script only.
  from groie_tf import cli  # pylint: disable=g-import-not-at-top
  # Defined here, not at import, so importing the checker adds no flags.
  flags.DEFINE_string('pattern', None, 'TFRecord files (a glob).')
  flags.DEFINE_boolean('include_mask', True, 'Whether records must hold masks.')
  flags.DEFINE_integer('num_classes', None,
                       'task.model.num_classes: class ids must be below it.')
  flags.mark_flag_as_required('pattern')
  cli.run(main)
