"""Runs an exported detector on images and draws what it finds.

    python predict.py --saved_model_dir=/tmp/groie_maskrcnn_shapes/export/saved_model \
        --images=~/.cache/groie_tf/shapes_v1_256px_800train_100val_seed0/val \
        --annotation_file=~/.cache/groie_tf/shapes_v1_256px_800train_100val_seed0/instances_val.json \
        --output_dir=/tmp/predictions

Writes one PNG per image (masks, boxes, class names and scores drawn) and
`detections.json`, COCO results that `pycocotools`' `COCO.loadRes` reads.
`--images` is a file, a folder or a glob. With `--annotation_file` (COCO),
class names and image ids come from it; otherwise ids count from 1 in file
order and `--class_names` names the classes. Boxes and masks are in pixels
of each image as given (EXIF orientation applied), at any size.

An image that cannot be read is skipped with a warning; the rest are
written, and the exit status is then 2, naming the skipped files.
"""

import json
import os
from typing import Sequence

from absl import flags
from absl import logging
import tensorflow as tf

from groie_tf import cli
from groie_tf.errors import UserError
from groie_tf.serving import predict

_SAVED_MODEL_DIR = flags.DEFINE_string('saved_model_dir', None,
                                       'A SavedModel from export_saved_model.py.')
_IMAGES = flags.DEFINE_string('images', None, 'An image, a folder or a glob.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Gets the PNGs and detections.json.')
_ANNOTATION_FILE = flags.DEFINE_string(
    'annotation_file', None, 'COCO JSON giving class names and image ids.')
_CLASS_NAMES = flags.DEFINE_list('class_names', [],
                                 'Names of classes 1, 2, ... (no annotations).')
_SCORE_THRESHOLD = flags.DEFINE_float('score_threshold', 0.3,
                                      'Detections below are dropped.')

def main(argv: Sequence[str]) -> None:
  del argv
  coco = None
  if _ANNOTATION_FILE.value:
    with tf.io.gfile.GFile(os.path.expanduser(_ANNOTATION_FILE.value)) as f:
      coco = json.load(f)
  class_names = predict.class_names_from(coco, _CLASS_NAMES.value)
  image_ids = {i['file_name']: i['id'] for i in coco['images']} if coco else {}
  paths = predict.image_paths(_IMAGES.value)
  detect = predict.load_detector(os.path.expanduser(_SAVED_MODEL_DIR.value))
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  results, unreadable = [], []
  for index, (path, name) in enumerate(zip(paths,
                                           predict.output_names(paths))):
    try:
      image = predict.read_image(path)
    except OSError as error:  # truncated, not an image, unreadable
      logging.warning('Skipping %s: %s', path, error)
      unreadable.append(path)
      continue
    instances = predict.to_instances(detect(image), *image.shape[:2],
                                     _SCORE_THRESHOLD.value,
                                     detect.mask_paste)
    image_id = image_ids.get(os.path.basename(path), index + 1)
    results += predict.to_coco_results(instances, image_id)
    predict.draw(image, instances, class_names).save(
        os.path.join(_OUTPUT_DIR.value, name))
    logging.info('%d/%d %s: %d detections', index + 1, len(paths), path,
                 len(instances))
  with open(os.path.join(_OUTPUT_DIR.value, 'detections.json'), 'w') as f:
    json.dump(results, f)
  print(f'{len(results)} detections in {len(paths) - len(unreadable)} images '
        f'written to {_OUTPUT_DIR.value}')
  if unreadable:
    raise UserError(f'{len(unreadable)} image(s) could not be read and '
                        f'were skipped: {", ".join(unreadable)}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['saved_model_dir', 'images', 'output_dir'])
  cli.run(main)
