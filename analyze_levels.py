"""Measures how a trained GRoIE model uses each FPN level, by RoI size.

    python analyze_levels.py --experiment=groie_maskrcnn_shapes \
        --checkpoint_path=/tmp/groie_maskrcnn_shapes \
        --images=~/.cache/groie_tf/shapes_v1_256px_800train_100val_seed0/val \
        --output_dir=docs/levels

For each detection (score >= --score_threshold) on each image, the share of
every level in the box branch's aggregated RoI feature (see
`groie_tf/analysis/levels.py`), averaged per RoI size range, beside the level
FPN's size rule would pick. Writes `levels.png` and `levels.json`.
"""

import json
import os

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from groie_tf import cli
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf.analysis import levels
from groie_tf.configs import loading
from groie_tf.layers import GRoIE
from groie_tf.serving import export
from groie_tf.serving import predict

_EXPERIMENT = flags.DEFINE_string('experiment', None, 'The experiment trained.')
_CONFIG_FILE = flags.DEFINE_multi_string('config_file', None,
                                         'YAML deltas, as in training.')
_PARAMS_OVERRIDE = flags.DEFINE_string('params_override', '',
                                       'Overrides, as in training.')
_CHECKPOINT_PATH = flags.DEFINE_string('checkpoint_path', None,
                                       'A checkpoint or a model_dir.')
_IMAGES = flags.DEFINE_string('images', None, 'An image, a folder or a glob.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Gets levels.png and levels.json.')
_SCORE_THRESHOLD = flags.DEFINE_float('score_threshold', 0.5,
                                      'Detections below are left out.')


def main(_):
  params = loading.load_experiment(
      _EXPERIMENT.value, _CONFIG_FILE.value or (), _PARAMS_OVERRIDE.value)
  module, checkpoint = export.checked_module(
      params, _CHECKPOINT_PATH.value, _EXPERIMENT.value, batch_size=1)
  if not isinstance(module.model.roi_aligner, GRoIE):
    raise ValueError(f'{_EXPERIMENT.value} has no box GRoIE to analyse.')
  tf.train.Checkpoint(model=module.model).read(checkpoint).expect_partial()

  all_boxes, all_shares = [], []
  paths = predict.image_paths(_IMAGES.value)
  for number, path in enumerate(paths, 1):
    if number % 10 == 1 or number == len(paths):
      logging.info('Image %d/%d: %s', number, len(paths), path)
    image = predict.read_image(path)
    boxes, shares = levels.detections_and_shares(module, image,
                                                 _SCORE_THRESHOLD.value)
    all_boxes.append(boxes)
    all_shares.append(shares)
  boxes, shares = np.concatenate(all_boxes), np.concatenate(all_shares)
  if not len(boxes):
    raise ValueError(f'No detection scored {_SCORE_THRESHOLD.value} or more.')
  layer = module.model.roi_aligner
  rows = levels.summarize(shares, boxes, layer.min_level, layer.max_level)
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(_OUTPUT_DIR.value, 'levels.json'), 'w') as f:
    json.dump({'experiment': _EXPERIMENT.value, 'checkpoint': checkpoint,
               'images': len(paths), 'rois': len(boxes),
               'levels': [f'P{l}' for l in range(layer.min_level,
                                                  layer.max_level + 1)],
               'by_size': rows}, f, indent=1)
  levels.plot(rows, layer.min_level,
              os.path.join(_OUTPUT_DIR.value, 'levels.png'),
              title=f'{_EXPERIMENT.value}: GRoIE (left) vs FPN rule (right, '
                    'hatched)')
  level_names = ' '.join(f'{f"P{l}":>4s}' for l in range(layer.min_level,
                                                          layer.max_level + 1))
  print(f'{"RoI size":>12s} {"count":>10s} | GRoIE {level_names} | FPN rule '
        f'{level_names}')
  for row in rows:
    shares_text = ' '.join(f'{s:4.2f}' for s in row['groie_share'])
    rule_text = ' '.join(f'{s:4.2f}' for s in row['heuristic_share'])
    print(f'{row["size_range"]:>12s} {row["count"]:5d} RoIs | GRoIE '
          f'{shares_text} | FPN rule {rule_text}')
  logging.info('Wrote %s', _OUTPUT_DIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['experiment', 'checkpoint_path', 'images',
                                'output_dir'])
  cli.run(main)
