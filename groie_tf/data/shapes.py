"""The built-in data set: synthetic shapes with instance masks, as COCO.

    python -m groie_tf.data.shapes --output_dir=/tmp/shapes

Draws images of circles, triangles, squares and stars on varied
backgrounds, from under 16 px to over 200 px across so that every FPN level
has objects to see, placed so that they overlap and hide each other. Writes
it as a COCO-format data set (JPEG images and an instances JSON per split)
and converts that to TFRecords with Model Garden's own COCO converter, the
same command users run on their data (see the README). So the built-in set
exercises exactly the path a user's data takes.

The set is a pure function of its `ShapesDataset` config (seed included):
the same config gives the same bytes.

Layout of `output_dir`:
    train/000000.jpg ...          val/000000.jpg ...
    instances_train.json          instances_val.json
    train-00000-of-0000N.tfrecord val-00000-of-0000N.tfrecord
    DONE                          (written last: the set is complete)
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import cv2
import numpy as np
from PIL import Image
from PIL import ImageDraw
from pycocotools import mask as mask_utils

from official.modeling import hyperparams

CLASS_NAMES = ('circle', 'triangle', 'square', 'star')
# Instances whose visible part is smaller than this are not annotated (and
# not kept: the scene is redrawn without them).
_MIN_VISIBLE_FRACTION = 0.35
_MIN_VISIBLE_PIXELS = 12


@dataclasses.dataclass
class ShapesDataset(hyperparams.Config):
  """What defines the built-in set; its fields name its directory.

  A Model Garden config block, so experiments carry it (`task.shapes_data`)
  and `--params_override` can change it.
  """
  root: str = '~/.cache/groie_tf'
  num_train_images: int = 800
  num_val_images: int = 100
  image_size: int = 256
  min_object_size: int = 8
  max_object_size: int = 224
  max_objects_per_image: int = 8
  seed: int = 0

  @property
  def name(self) -> str:
    return (f'shapes_v1_{self.image_size}px_{self.num_train_images}train_'
            f'{self.num_val_images}val_seed{self.seed}')


def _shape_polygon(rng: np.random.Generator, class_name: str,
                   center: np.ndarray, size: float) -> np.ndarray:
  """[V, 2] (x, y) vertices of one shape whose bounding extent is ~`size`."""
  radius = size / 2
  angle = rng.uniform(0, 2 * np.pi)
  if class_name == 'circle':
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.full_like(t, radius)
  elif class_name == 'triangle':
    t = angle + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    r = np.full(3, radius)
  elif class_name == 'square':
    t = angle + np.arange(4) * np.pi / 2
    r = np.full(4, radius)
  elif class_name == 'star':
    t = angle + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
  else:
    raise ValueError(f'Unknown shape class {class_name!r}.')
  return center + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """[size, size, 3] float background: flat, gradient, stripes or checks."""
  base = rng.uniform(0, 255, 3)
  other = rng.uniform(0, 255, 3)
  yy, xx = np.mgrid[0:size, 0:size] / size
  kind = rng.integers(4)
  if kind == 0:
    weight = np.zeros_like(xx)
  elif kind == 1:
    direction = rng.uniform(0, 2 * np.pi)
    weight = (np.cos(direction) * xx + np.sin(direction) * yy)
    weight = (weight - weight.min()) / (np.ptp(weight) + 1e-9)
  elif kind == 2:
    period = rng.uniform(0.03, 0.2)
    weight = ((yy if rng.integers(2) else xx) // period) % 2
  else:
    period = rng.uniform(0.05, 0.25)
    weight = ((xx // period + yy // period) % 2)
  image = base + weight[..., None] * (other - base) * rng.uniform(0.2, 0.6)
  return image + rng.normal(0, 6, image.shape)


def _rasterize(polygon: np.ndarray, size: int) -> np.ndarray:
  canvas = Image.new('L', (size, size), 0)
  ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=1)
  return np.asarray(canvas, dtype=bool)


def _has_hole(mask: np.ndarray) -> bool:
  _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                  cv2.CHAIN_APPROX_SIMPLE)
  return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
  """COCO polygons of a hole-free mask (contours through pixel centres)."""
  contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_NONE)
  # cv2 puts pixel centres at integers, COCO at half-integers.
  return [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours
          if len(c) >= 3]


def render_image(
    rng: np.random.Generator, config: ShapesDataset
) -> Tuple[np.ndarray, List[Tuple[int, List[List[float]], np.ndarray]]]:
  """Draws one image.

  Returns:
    image: [S, S, 3] uint8.
    instances: (class_id in 1..4, COCO polygons, [S, S] bool mask of
      those polygons), back to front. Each is the visible part of a shape,
      hole-free and at least `_MIN_VISIBLE_FRACTION` of the whole.
  """
  size = config.image_size
  image = _background(rng, size)
  masks, classes, colors = [], [], []
  num_objects = rng.integers(1, config.max_objects_per_image + 1)
  log_min = np.log(config.min_object_size)
  log_max = np.log(config.max_object_size)
  for _ in range(num_objects * 3):  # a few tries per object
    if len(masks) == num_objects:
      break
    class_id = int(rng.integers(len(CLASS_NAMES))) + 1
    extent = float(np.exp(rng.uniform(log_min, log_max)))
    center = rng.uniform(extent * 0.3, size - extent * 0.3, 2)
    new = _rasterize(
        _shape_polygon(rng, CLASS_NAMES[class_id - 1], center, extent), size)
    color = rng.uniform(0, 255, 3)
    if new.sum() < _MIN_VISIBLE_PIXELS:
      continue
    # Keep the new shape only if every shape it covers stays visible enough
    # and hole-free (COCO polygons cannot have holes).
    visible = [m & ~new for m in masks]
    if all(v.sum() >= _MIN_VISIBLE_FRACTION * m.sum() and not _has_hole(v)
           for v, m in zip(visible, masks)):
      masks = visible + [new]
      classes.append(class_id)
      colors.append(color)
  # The annotation is the polygon of each visible part; paint exactly what
  # it rasterizes to, so that pixels and labels agree to the pixel.
  instances = []
  for class_id, mask, color in zip(classes, masks, colors):
    polygons = _mask_to_polygons(mask)
    if not polygons:
      continue
    mask = polygons_to_mask(polygons, size)
    shade = rng.uniform(0.85, 1.15)
    image[mask] = color * shade + rng.normal(0, 4, (int(mask.sum()), 3))
    instances.append((class_id, polygons, mask))
  image = np.clip(image, 0, 255).astype(np.uint8)
  return image, instances


def polygons_to_mask(polygons: List[List[float]], size: int) -> np.ndarray:
  """[size, size] bool: COCO polygons rasterized as pycocotools does."""
  rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
  return mask_utils.decode(rle).astype(bool)


def _coco_annotation(polygons: List[List[float]], size: int, class_id: int,
                     image_id: int, annotation_id: int) -> Dict:
  rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
  return {
      'id': annotation_id, 'image_id': image_id, 'category_id': class_id,
      'segmentation': polygons, 'area': float(mask_utils.area(rle)),
      'bbox': [float(v) for v in mask_utils.toBbox(rle)], 'iscrowd': 0,
  }


def write_coco_split(config: ShapesDataset, split: str, num_images: int,
                     output_dir: str) -> str:
  """Writes `split`'s JPEGs and COCO instances JSON; returns the JSON path."""
  # One independent stream per (seed, split, image): any image can be
  # regenerated alone, and the splits never share an image.
  split_key = {'train': 0, 'val': 1}[split]
  image_dir = os.path.join(output_dir, split)
  os.makedirs(image_dir, exist_ok=True)
  images, annotations = [], []
  for index in range(num_images):
    rng = np.random.default_rng([config.seed, split_key, index])
    image, instances = render_image(rng, config)
    image_id = index + 1
    file_name = f'{index:06d}.jpg'
    Image.fromarray(image).save(os.path.join(image_dir, file_name),
                                quality=95)
    images.append({'id': image_id, 'file_name': file_name,
                   'height': config.image_size, 'width': config.image_size})
    for class_id, polygons, _ in instances:
      annotations.append(_coco_annotation(polygons, config.image_size,
                                          class_id, image_id,
                                          len(annotations) + 1))
  categories = [{'id': i + 1, 'name': n, 'supercategory': 'shape'}
                for i, n in enumerate(CLASS_NAMES)]
  path = os.path.join(output_dir, f'instances_{split}.json')
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': categories,
               'info': {'description': f'groie_tf {config.name}'}}, f)
  return path


def convert_coco_to_tfrecords(image_dir: str, annotations_file: str,
                              output_prefix: str, num_shards: int) -> None:
  """Model Garden's COCO converter, run as the command users run."""
  command = [
      sys.executable, '-m', 'official.vision.data.create_coco_tf_record',
      f'--image_dir={image_dir}', f'--object_annotations_file={annotations_file}',
      f'--output_file_prefix={output_prefix}', f'--num_shards={num_shards}',
      '--include_masks', '--num_processes=0']
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f'Model Garden\'s COCO converter failed:\n'
                       f'{" ".join(command)}\n{result.stderr[-3000:]}')


def dataset_dir(config: ShapesDataset) -> str:
  return os.path.join(os.path.expanduser(config.root), config.name)


def ensure_dataset(config: ShapesDataset) -> str:
  """Returns the set's directory, generating it first if it is missing.

  Generation happens in a temporary sibling that is renamed into place when
  complete, so concurrent workers and interrupted runs never see half a set.
  """
  final = dataset_dir(config)
  if os.path.exists(os.path.join(final, 'DONE')):
    return final
  os.makedirs(os.path.dirname(final), exist_ok=True)
  logging.info('Generating the built-in data set in %s ...', final)
  work = tempfile.mkdtemp(prefix=config.name + '.tmp', dir=os.path.dirname(final))
  try:
    for split, count in (('train', config.num_train_images),
                         ('val', config.num_val_images)):
      annotations = write_coco_split(config, split, count, work)
      convert_coco_to_tfrecords(os.path.join(work, split), annotations,
                                os.path.join(work, split),
                                num_shards=max(1, count // 400))
    with open(os.path.join(work, 'DONE'), 'w') as f:
      f.write(json.dumps(config.as_dict()))
    try:
      os.rename(work, final)
    except OSError:  # another worker finished first
      if not os.path.exists(os.path.join(final, 'DONE')):
        raise
  finally:
    shutil.rmtree(work, ignore_errors=True)
  logging.info('Built-in data set ready: %s', final)
  return final


def summarize(annotations_file: str) -> Dict[str, float]:
  """Counts in a COCO instances file, by class and by COCO size range."""
  with open(annotations_file) as f:
    data = json.load(f)
  areas = np.array([a['area'] for a in data['annotations']])
  names = {c['id']: c['name'] for c in data['categories']}
  summary = {'images': len(data['images']), 'instances': len(areas),
             'small (<32^2)': int((areas < 32**2).sum()),
             'medium': int(((areas >= 32**2) & (areas < 96**2)).sum()),
             'large (>96^2)': int((areas >= 96**2).sum())}
  for class_id, name in names.items():
    summary[name] = sum(a['category_id'] == class_id
                        for a in data['annotations'])
  return summary


def main(argv: Sequence[str]) -> None:
  del argv
  directory = ensure_dataset(
      ShapesDataset(root=flags.FLAGS.output_dir, seed=flags.FLAGS.seed))
  for split in ('train', 'val'):
    print(split, summarize(os.path.join(directory, f'instances_{split}.json')))


if __name__ == '__main__':
  # Defined here, not at import: the library is imported by train.py and
  # analyze_levels.py, which have flags of their own.
  flags.DEFINE_string('output_dir', '~/.cache/groie_tf',
                      'Where the set\'s directory is created.')
  flags.DEFINE_integer('seed', 0, 'Seed of the set.')
  app.run(main)
