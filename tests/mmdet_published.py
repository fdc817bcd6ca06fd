"""The published models' conversion at full width, against the real
mmdetection: the converter's command line on each `.pth` written by
`tools/mmdet_reference/make_checkpoints.py --published DIR`, then the
converted model's proposals, detections and masks on its photos against
mmdetection's. Prints the table of `docs/numerics.md`:

    python -m tests.mmdet_published DIR

(Not a test: the `.pth` files are 160-330 MB each and not committed;
`tests/test_convert_mmdet_checkpoint.py` runs the converter on the
committed reduced-width checkpoint, with the helpers below.)
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
import yaml

from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.configs import loading
from groie_tf.conversion import published
from groie_tf.modeling import builder
from tests import mmdet_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The committed reduced-width published checkpoint (make_checkpoints.py).
REDUCED = 'mask_rcnn_groie'
REDUCED_PTH = os.path.join(mmdet_stages.FIXTURES, f'{REDUCED}.pth')
MATCH_IOU = 0.999
# make_checkpoints.py's score threshold (mmdetection's 0.05, lowered for
# random weights).
SCORE_OVERRIDE = 'task.model.detection_generator.pre_nms_score_threshold=0.01'


def published_shapes() -> Dict[str, Dict[str, Tuple[int, ...]]]:
  """Each published config's full-width state-dict shapes, by key."""
  path = os.path.join(mmdet_stages.FIXTURES, 'published_shapes.npz')
  with np.load(path) as data:
    arrays = dict(data)
  names = sorted({k.rsplit('/', 1)[0] for k in arrays})
  return {name: {key: tuple(int(d) for d in shape if d >= 0)
                 for key, shape in zip(arrays[f'{name}/keys'],
                                       arrays[f'{name}/shapes'])}
          for name in names}


def reduced_config_file(directory: pathlib.Path) -> str:
  """A config file of the reduced widths of `REDUCED`, for the converter's
  `--config_file` (the published config is full width)."""
  model = mmdet_stages.model_config(REDUCED).as_dict()
  path = directory / 'reduced.yaml'
  path.write_text(yaml.safe_dump({'task': {'model': model}}))
  return str(path)


def run_cli(*flags: str) -> subprocess.CompletedProcess:
  """convert_mmdet_checkpoint.py with `flags`, its output captured."""
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'convert_mmdet_checkpoint.py'),
       *flags], capture_output=True, text=True, check=False)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Pairwise IoU of x1y1x2y2 boxes `[N, 4]`, `[M, 4]` -> `[N, M]`."""
  a, b = a[:, None].astype(np.float64), b[None].astype(np.float64)
  w = np.clip(np.minimum(a[..., 2], b[..., 2]) -
              np.maximum(a[..., 0], b[..., 0]), 0, None)
  h = np.clip(np.minimum(a[..., 3], b[..., 3]) -
              np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = w * h
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def match(got: np.ndarray, got_labels: Optional[np.ndarray],
          want: np.ndarray, want_labels: Optional[np.ndarray]
          ) -> List[Tuple[int, int]]:
  """One-to-one pairs (got, want) with IoU > MATCH_IOU and the same label,
  greedily by IoU."""
  if not len(got) or not len(want):
    return []
  overlaps = iou(got, want)
  if got_labels is not None:
    overlaps[got_labels[:, None] != want_labels[None]] = 0
  pairs, used_got, used_want = [], set(), set()
  for flat in np.argsort(-overlaps, axis=None):
    i, j = np.unravel_index(flat, overlaps.shape)
    if overlaps[i, j] <= MATCH_IOU:
      break
    if i not in used_got and j not in used_want:
      pairs.append((int(i), int(j)))
      used_got.add(i)
      used_want.add(j)
  return pairs


def compare_sets(got, got_scores, got_labels, want, want_scores, want_labels
                 ) -> Dict[str, float]:
  pairs = match(got, got_labels, want, want_labels)
  total = max(len(got), len(want))
  errors = {'count': float(len(want)),
            'matched': len(pairs) / total if total else 1.0}
  if pairs:
    i, j = map(list, zip(*pairs))
    errors['box px'] = float(np.abs(got[i] - want[j]).max())
    errors['score'] = float(np.abs(got_scores[i] - want_scores[j]).max())
  return errors, pairs


def _xyxy(yxyx):
  return np.asarray(yxyx)[..., [1, 0, 3, 2]]


# Runs a script as __main__, then writes its peak resident size (KiB) to
# the file argv[1]. VmHWM is the process's own since its exec; ru_maxrss
# would also count the memory of the (large) process that started it.
_PEAK_WRAPPER = """
import re, runpy, sys
peak_file, sys.argv = sys.argv[1], sys.argv[2:]
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
finally:
  status = open('/proc/self/status').read()
  with open(peak_file, 'w') as f:
    f.write(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))
"""


def convert_with_cli(checkpoint: str, output_dir: str) -> Tuple[float, float]:
  """Runs the converter's command line; (seconds, peak resident MiB)."""
  peak_file = os.path.join(output_dir, 'peak_kib')
  start = time.perf_counter()
  subprocess.run([sys.executable, '-c', _PEAK_WRAPPER, peak_file,
                  os.path.join(ROOT, 'convert_mmdet_checkpoint.py'),
                  f'--checkpoint={checkpoint}', f'--output_dir={output_dir}',
                  f'--params_override={SCORE_OVERRIDE}'],
                 check=True, capture_output=True)
  seconds = time.perf_counter() - start
  with open(peak_file) as f:
    return seconds, int(f.read()) / 1024


def restored(output_dir: str, experiment: str) -> tf_keras.Model:
  """The model of a converted model_dir, as evaluation restores it."""
  params = loading.load_experiment(
      experiment, [os.path.join(output_dir, 'params.yaml')])
  model_config = params.task.model
  model = builder.build_model(
      model_config,
      tf_keras.layers.InputSpec(shape=[None] + model_config.input_size))
  tf.train.Checkpoint(model=model).read(tf.train.latest_checkpoint(
      output_dir)).expect_partial().assert_existing_objects_matched()
  return model


def compare_outputs(model: tf_keras.Model, want: Dict[str, np.ndarray],
                    index: int) -> Dict[str, float]:
  """Proposals and detections of image `index` against mmdetection's."""
  image = tf.constant(want[f'{index}/image'])
  image_shape = tf.constant(want[f'{index}/img_shape'][None], tf.float32)
  errors = {}
  features = model.decoder(model.backbone(image, training=False),
                           training=False)
  scores, deltas = model.rpn_head(features)
  rois, roi_scores = model.roi_generator(deltas, scores, None, image_shape,
                                         training=False)
  count = int(np.count_nonzero(roi_scores.numpy()[0] > 0))
  proposals = want[f'{index}/proposals']
  found, _ = compare_sets(_xyxy(rois.numpy()[0, :count]),
                          roi_scores.numpy()[0, :count], None,
                          proposals[:, :4], proposals[:, 4], None)
  errors.update({f'proposals {k}': v for k, v in found.items()})

  outputs = model(image, image_shape=image_shape, training=False)
  count = int(outputs['num_detections'][0])
  ids = np.asarray(published.COCO_CATEGORY_IDS)
  detections = want[f'{index}/boxes']
  found, pairs = compare_sets(
      _xyxy(outputs['detection_boxes'].numpy()[0, :count]),
      outputs['detection_scores'].numpy()[0, :count],
      outputs['detection_classes'].numpy()[0, :count],
      detections[:, :4], detections[:, 4], ids[want[f'{index}/labels']])
  errors.update({f'detections {k}': v for k, v in found.items()})
  if f'{index}/mask_probabilities' in want and pairs:
    i, j = map(list, zip(*pairs))
    masks = outputs['detection_masks'].numpy()[0, :count]
    errors['mask probability'] = float(np.abs(
        masks[i] - want[f'{index}/mask_probabilities'][j]).max())
  return errors


def main(directory: str, names: Optional[List[str]] = None) -> None:
  rows = {}
  for model_info in published.PUBLISHED:
    name = model_info.name
    if names and name not in names:
      continue
    checkpoint = os.path.join(directory, name + '.pth')
    if not os.path.exists(checkpoint):
      continue
    with np.load(os.path.join(directory, name + '.npz')) as data:
      want = dict(data)
    with tempfile.TemporaryDirectory() as output_dir:
      seconds, peak = convert_with_cli(checkpoint, output_dir)
      model = restored(output_dir, model_info.experiment)
    images = sorted({int(k.split('/')[0]) for k in want})
    per_image = [compare_outputs(model, want, i) for i in images]
    row = {'convert s': seconds, 'peak MiB': peak}
    for errors in per_image:
      for key, value in errors.items():
        worst = min if 'matched' in key else max
        row[key] = worst(row.get(key, value), value)
    rows[name] = row
    print(name, {k: round(v, 7) for k, v in row.items()}, flush=True)
  columns = list(dict.fromkeys(k for row in rows.values() for k in row))
  print('| model | ' + ' | '.join(columns) + ' |')
  print('| --- |' + ' --- |' * len(columns))
  for name, row in rows.items():
    print(f'| {name} | ' + ' | '.join(
        f'{row[c]:.3g}' if c in row else '-' for c in columns) + ' |')


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2:] or None)
