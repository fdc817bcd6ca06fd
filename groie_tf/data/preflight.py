"""Checks of a run's data made before its model is built.

Model Garden finds a mistyped input path only once the model is built (90 s
on a CPU), and a validation annotation file that does not belong to the
validation records only after the whole evaluation, when pycocotools
raises "Results do not correspond to the current dataset!" naming neither
file (hours on COCO-sized data; with train_and_eval, after the training
steps since the last checkpoint). Here both are found in seconds:

- every data file pattern must match a file (`check_input_paths`);
- the validation records are read once, without decoding their images,
  for their `image/source_id`, file name and size: each id must be an
  image of the annotation file, of the same file name and size
  (`validation_images`, `check_images_in_annotation_file`), and their count
  gives the evaluation its length (reading COCO val2017's 5000 records
  takes seconds).
"""

import json
from typing import List, NamedTuple, Sequence, Union

import tensorflow as tf

from groie_tf.errors import DataError

_SHOWN = 5  # ids quoted in a message


def data_files(input_path: Union[str, Sequence[str]]) -> List[str]:
  """The files an `input_path` names, as Model Garden's `InputReader`
  reads it: a pattern, comma-separated patterns, or a list of them."""
  patterns = input_path.split(',') if isinstance(input_path, str) else list(
      input_path)
  return [path for pattern in patterns if pattern.strip()
          for path in sorted(tf.io.gfile.glob(pattern.strip()))]


def check_input_paths(task, mode: str, prefix: str = 'task') -> None:
  """Raises DataError if a data pattern the run reads matches no file, or
  its annotation file is missing. Data read through TFDS (no input_path)
  are not checked."""
  fields = []
  if 'train' in mode:
    fields.append(('train_data.input_path', task.train_data.input_path))
  if 'eval' in mode:
    fields.append(('validation_data.input_path',
                   task.validation_data.input_path))
  for name, input_path in fields:
    if input_path and not data_files(input_path):
      raise DataError(f'{prefix}.{name} {input_path!r} matches no file.')
  if ('eval' in mode and task.annotation_file and
      not tf.io.gfile.exists(task.annotation_file)):
    raise DataError(f'{prefix}.annotation_file {task.annotation_file!r} does '
                    'not exist.')


class RecordImage(NamedTuple):
  """What a record says of its image."""
  id: int  # image/source_id, as Model Garden's parser reads it (-1 if empty)
  file_name: str  # image/filename ('' if absent)
  height: int  # image/height (0 if absent)
  width: int


def validation_images(input_path: Union[str, Sequence[str]]
                      ) -> List[RecordImage]:
  """The image of every record, in file order."""
  features = {
      'image/source_id': tf.io.FixedLenFeature([], tf.string, ''),
      'image/filename': tf.io.FixedLenFeature([], tf.string, ''),
      'image/height': tf.io.FixedLenFeature([], tf.int64, 0),
      'image/width': tf.io.FixedLenFeature([], tf.int64, 0)}
  records = tf.data.TFRecordDataset(data_files(input_path)).batch(1024)
  images = []
  for batch in records:
    parsed = {k: v.numpy() for k, v in
              tf.io.parse_example(batch, features).items()}
    images += [RecordImage(int(i) if i else -1, name.decode(), int(h), int(w))
               for i, name, h, w in zip(
                   parsed['image/source_id'], parsed['image/filename'],
                   parsed['image/height'], parsed['image/width'])]
  return images


def _mismatch(record: RecordImage, annotated) -> str:
  """'' if the annotation file's image fits the record's, else how not."""
  if annotated is None:
    return 'not in the annotation file'
  name = annotated.get('file_name', '')
  if record.file_name and name and record.file_name != name:
    return f'{record.file_name} in the records, {name} in the annotation file'
  size = (annotated.get('height'), annotated.get('width'))
  if record.height and None not in size and (record.height,
                                             record.width) != size:
    return (f'{record.height}x{record.width} in the records, '
            f'{size[0]}x{size[1]} in the annotation file')
  return ''


def check_images_in_annotation_file(images: Sequence[RecordImage],
                                    annotation_file: str, input_path: str,
                                    prefix: str = 'task') -> None:
  """Raises DataError, naming both, unless every record's image id is an
  image of the COCO annotation file with the record's file name and size
  (where both give them)."""
  with tf.io.gfile.GFile(annotation_file) as f:
    annotated = {image['id']: image for image in json.load(f).get('images', [])}
  wrong = [(record.id, problem) for record in images
           for problem in [_mismatch(record, annotated.get(record.id))]
           if problem]
  if wrong:
    shown = '; '.join(f'image {i}: {problem}' for i, problem in wrong[:_SHOWN])
    more = f'; and {len(wrong) - _SHOWN} more' if len(wrong) > _SHOWN else ''
    raise DataError(
        f'{len(wrong)} of the {len(images)} validation records '
        f'({prefix}.validation_data.input_path={input_path!r}) do not match '
        f'the images of {prefix}.annotation_file={annotation_file!r} '
        f'({shown}{more}): the COCO evaluation would fail at its end, or '
        'score against other images. Give the annotation file these records '
        'were made from.')
