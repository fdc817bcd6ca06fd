"""mmdetection's mask paste (`FCNMaskHead._predict_by_feat_single`,
`_do_paste_mask`), in numpy, for evaluation and prediction on the host.

mmdetection samples each `M x M` mask probability map at the centres of
the image pixels with `F.grid_sample` (bilinear, `align_corners=False`,
zero padding) over the box's float corners, and keeps pixels >= 0.5. On
its CPU path (the one its fixtures here were made on) it pastes box by box
with `skip_empty=True`: pixels further than one pixel outside the box are
0. In mask pixels, image pixel p of a box `[x0, x1)` reads mask coordinate
`u = (p + 0.5 - x0) / (x1 - x0) * M - 0.5`, bilinearly, reading 0 outside
the mask. That is separable: the pasted map is `Ry @ mask @ Rx.T`, with
`Ry`, `Rx` the per-axis interpolation matrices.

Model Garden's paste (`mask_ops.paste_instance_masks`) expands the box by
30/28, rounds it to integers and resizes with OpenCV; its threshold is
> 0.5. 21% of the boundary pixels differed in a probe
(`docs/fidelity.md`).
"""

import numpy as np
from official.vision.ops import mask_ops

MASK_THRESHOLD = 0.5  # mmdetection's mask_thr_binary, kept when >=
# How a layout's masks are pasted: Model Garden's rule or mmdetection's.
STYLES = ('model_garden', 'mmdetection')


def _interpolation(low: float, high: float, size: int,
                   mask_size: int) -> np.ndarray:
  """`[size, mask_size]` bilinear weights of the image pixels along one axis
  of a box `[low, high)`; rows outside the pasting window are 0."""
  centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
  # mmdetection's grid coordinate g in [-1, 1], then grid_sample's
  # unnormalisation ((g + 1) * M - 1) / 2, in float32 as torch computes it.
  grid = (centres - np.float32(low)) / (np.float32(high) - np.float32(low))
  grid = grid * np.float32(2) - np.float32(1)
  coords = ((grid + np.float32(1)) * np.float32(mask_size) -
            np.float32(1)) / np.float32(2)
  first = np.floor(coords)
  frac = (coords - first).astype(np.float64)
  first = first.astype(np.int64)
  weights = np.zeros((size, mask_size))
  for tap, weight in ((first, 1.0 - frac), (first + 1, frac)):
    inside = (tap >= 0) & (tap < mask_size)
    np.add.at(weights, (np.nonzero(inside)[0], tap[inside]), weight[inside])
  start = max(int(np.floor(low)) - 1, 0)
  stop = min(int(np.ceil(high)) + 1, size)
  weights[:start] = 0.0
  weights[stop:] = 0.0
  return weights


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int,
                width: int) -> np.ndarray:
  """Mask probabilities pasted into the image, as mmdetection pastes them.

  Args:
    masks: `[N, M, M]` probabilities of each box's class.
    boxes: `[N, 4]` `[y1, x1, y2, x2]` in pixels of the `height x width`
      image (after undoing the resize).

  Returns:
    float32 `[N, height, width]` probabilities; `>= MASK_THRESHOLD` is the
    mask.
  """
  masks = np.asarray(masks, np.float32)
  boxes = np.asarray(boxes, np.float32)
  pasted = np.zeros((len(masks), height, width), np.float32)
  for i, (mask, (y1, x1, y2, x2)) in enumerate(zip(masks, boxes)):
    rows = _interpolation(y1, y2, height, mask.shape[0])
    cols = _interpolation(x1, x2, width, mask.shape[1])
    pasted[i] = rows @ mask.astype(np.float64) @ cols.T
  return pasted


def paste_binary_masks(masks: np.ndarray, boxes: np.ndarray, height: int,
                       width: int, style: str) -> np.ndarray:
  """bool `[N, height, width]` masks, pasted by the rule of `style`.

  Args:
    masks: `[N, M, M]` probabilities of each box's class.
    boxes: `[N, 4]` `[y1, x1, y2, x2]` in image pixels.
    style: 'mmdetection' (`paste_masks`, >= 0.5) or 'model_garden' (Model
      Garden's `paste_instance_masks`, > 0.5).
  """
  if style == 'mmdetection':
    return paste_masks(masks, boxes, height, width) >= MASK_THRESHOLD
  if style != 'model_garden':
    raise ValueError(f'style must be one of {STYLES}, got {style!r}.')
  boxes = np.asarray(boxes, np.float32)
  xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                   boxes[:, 2] - boxes[:, 0]], axis=1)
  return mask_ops.paste_instance_masks(masks, xywh, height, width) > 0.5
