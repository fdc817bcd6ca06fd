"""Runs an exported detector on images: COCO results and drawn detections.

Only TensorFlow and NumPy touch the SavedModel; masks are pasted into the
image by the rule the SavedModel names (`groie_tf.ops.mask_paste`).
"""

import collections
import colorsys
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageOps
import tensorflow as tf
from pycocotools import mask as mask_utils

from groie_tf.errors import CheckpointError
from groie_tf.errors import UserError
from groie_tf.ops import mask_paste

Detections = Dict[str, np.ndarray]
EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff',
              '.gif')


def image_paths(pattern: str) -> List[str]:
  """The images that a file, a folder or a glob names, sorted.

  The other files it names (not an image extension) are skipped with a
  warning that lists them.
  """
  pattern = os.path.expanduser(pattern)
  if tf.io.gfile.isdir(pattern):
    pattern = os.path.join(pattern, '*')
  matches = sorted(p for p in tf.io.gfile.glob(pattern)
                   if not tf.io.gfile.isdir(p))
  paths = [p for p in matches if p.lower().endswith(EXTENSIONS)]
  if not paths:
    raise UserError(f'No image ({", ".join(EXTENSIONS)}) matches {pattern}.')
  others = [p for p in matches if p not in paths]
  if others:
    logging.warning('Skipping %d file(s) without an image extension (%s): %s',
                    len(others), ', '.join(EXTENSIONS),
                    ', '.join(others[:5]) + (' ...' if len(others) > 5 else ''))
  return paths


def read_image(path: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB, as the camera held it.

  EXIF orientation is applied (phones store portrait photos sideways with a
  rotation tag). 16-bit greyscale keeps its range (PIL's RGB conversion
  would saturate it to white); 16-bit colour PIL already reduces to 8 bits.

  Raises:
    OSError: the file is unreadable, truncated or not an image.
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    image = Image.open(f)
    image.load()  # decodes now, so a truncated file fails here
  image = ImageOps.exif_transpose(image)
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
    pixels = np.asarray(image, np.float64)
    image = Image.fromarray(np.round(pixels / 257).clip(0, 255).astype(
        np.uint8))
  return np.asarray(image.convert('RGB'))


def output_names(paths: Sequence[str]) -> List[str]:
  """One distinct PNG name per input: `a.png` for `a.jpg`, unless another
  input shares the stem (`a.jpg.png`, `a.png.png`) or the name (then the
  folders are part of it: `cats__a.jpg.png`)."""
  stems = collections.Counter(
      os.path.splitext(os.path.basename(p))[0] for p in paths)
  names = collections.Counter(os.path.basename(p) for p in paths)
  common = os.path.commonpath([os.path.dirname(p) for p in paths])
  result = []
  for path in paths:
    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    if stems[stem] == 1:
      result.append(stem + '.png')
    elif names[name] == 1:
      result.append(name + '.png')
    else:
      relative = os.path.relpath(path, common)
      result.append(relative.replace(os.sep, '__') + '.png')
  return result


def load_detector(saved_model_dir: str) -> Callable[[np.ndarray], Detections]:
  """The SavedModel's `serving_default`, as image [H, W, 3] uint8 -> outputs.

  Works for each input type the exporter writes: for a signature taking
  strings, the image is encoded as PNG, and wrapped in a tf.Example when
  the signature parses examples. The function's `mask_paste` attribute is
  the rule its masks are pasted by (`to_instances`): the one the SavedModel
  records, or Model Garden's for one that records none.
  """
  if not tf.saved_model.contains_saved_model(saved_model_dir):
    raise CheckpointError(f'No SavedModel in {saved_model_dir}: give the '
                          'saved_model/ folder that export_saved_model.py '
                          'wrote.')
  loaded = tf.saved_model.load(saved_model_dir)
  serve = loaded.signatures['serving_default']
  # Signatures take their input by keyword (Model Garden names it `inputs`).
  (input_name, spec), = serve.structured_input_signature[1].items()

  takes_examples = spec.dtype == tf.string and _parses_examples(serve)

  def detect(image: np.ndarray) -> Detections:
    if spec.dtype == tf.uint8:
      inputs = image[None]
    else:
      encoded = tf.io.encode_png(image).numpy()
      if takes_examples:
        encoded = tf.train.Example(features=tf.train.Features(feature={
            'image/encoded': tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[encoded]))
        })).SerializeToString()
      inputs = [encoded]
    outputs = serve(**{input_name: tf.constant(inputs)})
    return {k: v.numpy()[0] for k, v in outputs.items()}

  recorded = getattr(loaded, 'mask_paste', None)
  detect.mask_paste = (recorded.numpy().decode() if recorded is not None
                       else 'model_garden')
  return detect


def _parses_examples(function) -> bool:
  """Whether a signature parses tf.Examples (else it decodes image bytes)."""
  graph = function.graph.as_graph_def()
  ops = {node.op for node in graph.node}
  ops.update(node.op for f in graph.library.function for node in f.node_def)
  return any(op.startswith('ParseExample') or op == 'ParseSingleExample'
             for op in ops)


def to_instances(detections: Detections, height: int, width: int,
                 score_threshold: float,
                 mask_paste_style: str = 'model_garden') -> List[Dict]:
  """Detections above the threshold, with masks pasted at image size by
  the rule `mask_paste_style` names (`groie_tf.ops.mask_paste.STYLES`).

  Returns:
    [{'box': [x, y, w, h], 'score', 'class_id', 'mask': [H, W] bool}], best
    first.
  """
  count = int(detections['num_detections'])
  keep = [i for i in range(count)
          if detections['detection_scores'][i] >= score_threshold]
  boxes = detections['detection_boxes'][keep]  # [K, 4] y1 x1 y2 x2 pixels
  xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                   boxes[:, 2] - boxes[:, 0]], axis=1)
  masks = np.zeros((len(keep), height, width), bool)
  if 'detection_masks' in detections and keep:
    masks = mask_paste.paste_binary_masks(
        detections['detection_masks'][keep], boxes, height, width,
        mask_paste_style)
  return [{'box': [float(v) for v in xywh[j]],
           'score': float(detections['detection_scores'][i]),
           'class_id': int(detections['detection_classes'][i]),
           'mask': masks[j]} for j, i in enumerate(keep)]


def to_coco_results(instances: Sequence[Mapping], image_id: int) -> List[Dict]:
  """COCO results entries (`bbox`, `segmentation` as RLE), for `loadRes`."""
  results = []
  for instance in instances:
    rle = mask_utils.encode(np.asfortranarray(instance['mask'].astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    results.append({'image_id': image_id, 'category_id': instance['class_id'],
                    'bbox': instance['box'], 'score': instance['score'],
                    'segmentation': rle})
  return results


def _color(class_id: int) -> np.ndarray:
  hue = (class_id * 0.618033988749895) % 1.0  # well-spread hues per class
  return np.array(colorsys.hsv_to_rgb(hue, 0.9, 1.0)) * 255


def draw(image: np.ndarray, instances: Sequence[Mapping],
         class_names: Mapping[int, str]) -> Image.Image:
  """The image with each instance's mask tinted, box, class name and score."""
  canvas = image.astype(np.float32)
  for instance in reversed(instances):  # the best drawn last, on top
    color = _color(instance['class_id'])
    canvas[instance['mask']] = 0.5 * canvas[instance['mask']] + 0.5 * color
  picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
  pen = ImageDraw.Draw(picture)
  for instance in reversed(instances):  # the best label drawn last, on top
    x, y, w, h = instance['box']
    color = tuple(int(c) for c in _color(instance['class_id']))
    pen.rectangle([x, y, x + w, y + h], outline=color, width=2)
    name = class_names.get(instance['class_id'], str(instance['class_id']))
    label = f'{name} {instance["score"]:.2f}'
    left, top, right, bottom = pen.textbbox((x, y), label)
    height = bottom - top
    text_y = y - height if y >= height else y  # inside the box at the top
    pen.rectangle([left, text_y, right, text_y + height], fill=color)
    pen.text((x, text_y), label, fill=(0, 0, 0))
  return picture


def class_names_from(coco: Optional[Mapping] = None,
                     names: Optional[Sequence[str]] = None) -> Dict[int, str]:
  """Class id -> name, from a COCO dataset's categories or a list (ids 1..)."""
  if coco:
    return {c['id']: c['name'] for c in coco['categories']}
  return {i + 1: n for i, n in enumerate(names or [])}
