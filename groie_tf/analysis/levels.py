"""How much each FPN level contributes to GRoIE's RoI features, by RoI size.

GRoIE sums the pre-processed features of every level. A level's share of
one RoI's aggregate is the L1 mass of its term over the L1 mass of all
terms:

    share_l = sum |f_l| / sum_k sum |f_k|,    sum over the S x S x C cells,

so the shares of a RoI sum to 1 (after a ReLU pre-processing conv, the
terms are non-negative and this is exactly each level's part of the sum).
Set against it: FPN's size rule (Eq. 1), which gives each RoI one level.
"""

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from groie_tf.ops import fpn_levels
from groie_tf.layers import GRoIE

# RoI sizes (sqrt of area, input pixels) grouped as FPN's rule splits them
# around its canonical 224 px, with the small ones split further.
SIZE_EDGES = (0, 32, 64, 112, 224, np.inf)


def level_shares(layer: GRoIE, features: Dict[str, tf.Tensor],
                 boxes: tf.Tensor) -> np.ndarray:
  """[B, N, L] share of each level in each RoI's aggregate (rows sum to 1).

  Args:
    layer: a GRoIE with 'sum' or 'sum+' aggregation.
    features: {str(level): [B, H_l, W_l, C]}, the FPN outputs.
    boxes: [B, N, 4] RoIs, y1 x1 y2 x2 in input pixels, N > 0.
  """
  if layer.aggregation not in ('sum', 'sum+'):
    raise ValueError('Level shares are defined for the sum aggregations; '
                     f'this GRoIE uses {layer.aggregation!r}.')
  terms = layer.level_features(features, boxes)  # L x [B, N, S, S, C]
  mass = tf.stack([tf.reduce_sum(tf.abs(tf.cast(t, tf.float64)), [2, 3, 4])
                   for t in terms], axis=-1)  # [B, N, L]
  total = tf.reduce_sum(mass, -1, keepdims=True)
  # A RoI whose every term is 0 gets equal shares rather than 0/0.
  equal = tf.fill(tf.shape(mass), tf.constant(1 / len(terms), tf.float64))
  return tf.where(total > 0, mass / tf.where(total > 0, total, 1),
                  equal).numpy()


def summarize(shares: np.ndarray, boxes: np.ndarray, min_level: int,
              max_level: int) -> List[Dict]:
  """Mean shares and the heuristic's assignment, per RoI size range.

  Args:
    shares: [K, L] from `level_shares`, valid RoIs only.
    boxes: [K, 4] those RoIs, y1 x1 y2 x2 in input pixels.

  Returns:
    One row per size range holding RoIs: `size_range`, `count`,
    `groie_share` (L means, summing to 1) and `heuristic_share` (the fraction
    of RoIs FPN's rule sends to each level).
  """
  num_levels = max_level - min_level + 1
  scale = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) *
                  np.maximum(boxes[:, 3] - boxes[:, 1], 0))
  assigned = fpn_levels.fpn_levels(tf.constant(boxes[None], tf.float32), min_level,
                            max_level).numpy()[0] - min_level
  rows = []
  for low, high in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:]):
    inside = (scale >= low) & (scale < high)
    if not inside.any():
      continue
    rows.append({
        'size_range': f'{low:g}-{high:g} px',
        'count': int(inside.sum()),
        'groie_share': shares[inside].mean(0).tolist(),
        'heuristic_share': (np.bincount(assigned[inside],
                                        minlength=num_levels) /
                            inside.sum()).tolist(),
    })
  return rows


def plot(rows: Sequence[Dict], min_level: int, path: str,
         title: str = '') -> None:
  """Stacked bars per size range: GRoIE's shares beside FPN's rule."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(1.6 * len(rows) + 3, 4))
  num_levels = len(rows[0]['groie_share'])
  colors = pyplot.get_cmap('viridis')(np.linspace(0.1, 0.9, num_levels))
  x = np.arange(len(rows))
  for offset, key, hatch in ((-0.2, 'groie_share', ''),
                             (0.2, 'heuristic_share', '//')):
    bottom = np.zeros(len(rows))
    for level in range(num_levels):
      height = np.array([r[key][level] for r in rows])
      axes.bar(x + offset, height, 0.38, bottom=bottom, color=colors[level],
               hatch=hatch, edgecolor='white',
               label=f'P{min_level + level}' if offset < 0 else None)
      bottom += height
  axes.set_xticks(x, [f'{r["size_range"]}\n{r["count"]} RoIs' for r in rows])
  axes.set_ylabel('share of the RoI feature')
  axes.set_ylim(0, 1)
  axes.set_title(title or 'left: GRoIE (measured)   right, hatched: FPN rule')
  axes.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0))
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


def detections_and_shares(module, image: np.ndarray, score_threshold: float):
  """Runs an export module's model on one image.

  Args:
    module: a `GRoIEDetectionModule` whose model holds trained weights.
    image: [H, W, 3] uint8.
    score_threshold: detections below it are left out.

  Returns:
    boxes [K, 4] (y1 x1 y2 x2, model-input pixels) of the detections kept,
    and their [K, L] level shares in the box branch's GRoIE.
  """
  model = module.model
  images, anchors, image_info = module.preprocess(tf.constant(image[None]))
  detections = model.call(images=images, image_shape=image_info[:, 1, :],
                          anchor_boxes=anchors, training=False)
  count = int(detections['num_detections'][0])
  scores = detections['detection_scores'][0, :count].numpy()
  boxes = detections['detection_boxes'][0, :count].numpy()[
      scores >= score_threshold]
  if not len(boxes):
    layer = model.roi_aligner
    return boxes, np.zeros((0, layer.max_level - layer.min_level + 1))
  features = model.decoder(model.backbone(images))
  shares = level_shares(model.roi_aligner, features,
                        tf.constant(boxes[None], tf.float32))[0]
  return boxes, shares
