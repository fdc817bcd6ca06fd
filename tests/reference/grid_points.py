"""Loop references of Grid R-CNN's targets, jitter and decoding.

Written from the semantics of mmdetection's `GridHead.get_targets`,
`GridRoIHead._random_jitter` and `GridHead.get_bboxes` (Grid R-CNN Plus),
in mmdetection's layout: boxes `[x1, y1, x2, y2]`, one heatmap per point
`[9, H, W]`. The targets are computed in float32 scalars, as torch does,
since the cell of a point on a bin edge depends on it.
"""

import numpy as np

f32 = np.float32
POINTS, MAP, WINDOW = 9, 56, 28
# Window origin per axis index 0, 1, 2 (Plus's "sub-regions").
ORIGIN = [0, int((0.5 - 0.25) * MAP), MAP - WINDOW]


def targets(rois, gts, radius=1):
  """`[R, 9, 28, 28]` targets of `[R, 4]` RoIs and their gt boxes."""
  out = np.zeros((len(rois), POINTS, WINDOW, WINDOW), np.float32)
  for i, (roi, gt) in enumerate(zip(rois, gts)):
    x1, y1, x2, y2 = (f32(v) for v in roi)
    ex1, ey1 = x1 - (x2 - x1) / f32(2), y1 - (y2 - y1) / f32(2)
    ex2, ey2 = x2 + (x2 - x1) / f32(2), y2 + (y2 - y1) / f32(2)
    ew, eh = ex2 - ex1, ey2 - ey1
    if ew <= 3 or eh <= 3:
      continue
    full = np.zeros((POINTS, MAP, MAP), np.float32)
    for j in range(POINTS):
      fx, fy = f32(1 - (j // 3) / 2), f32(1 - (j % 3) / 2)
      px = fx * f32(gt[0]) + (f32(1) - fx) * f32(gt[2])
      py = fy * f32(gt[1]) + (f32(1) - fy) * f32(gt[3])
      cx = int((px - ex1) / ew * f32(MAP))
      cy = int((py - ey1) / eh * f32(MAP))
      for x in range(cx - radius, cx + radius + 1):
        for y in range(cy - radius, cy + radius + 1):
          if 0 <= x < MAP and 0 <= y < MAP and (
              (x - cx)**2 + (y - cy)**2 <= radius**2):
            full[j, y, x] = 1
    for j in range(POINTS):
      ox, oy = ORIGIN[j // 3], ORIGIN[j % 3]
      out[i, j] = full[j, oy:oy + WINDOW, ox:ox + WINDOW]
  return out


def jitter(boxes, offsets, height, width):
  """`[R, 4]` boxes moved and scaled by `offsets` (dx, dy, dw, dh), clamped."""
  out = []
  for (x1, y1, x2, y2), (ox, oy, ow, oh) in zip(boxes, offsets):
    cx, cy = (x1 + x2) / 2 + abs(x2 - x1) * ox, (y1 + y2) / 2 + abs(
        y2 - y1) * oy
    w, h = abs(x2 - x1) * (1 + ow), abs(y2 - y1) * (1 + oh)
    clamp = lambda v, high: min(max(v, 0.0), high)
    out.append([clamp(cx - w / 2, width - 1), clamp(cy - h / 2, height - 1),
                clamp(cx + w / 2, width - 1), clamp(cy + h / 2, height - 1)])
  return np.array(out)


def decode(logits, rois):
  """`[R, 4]` boxes voted from `[R, 9, 28, 28]` logits, float64."""
  out = []
  for heatmaps, (x1, y1, x2, y2) in zip(np.asarray(logits, np.float64), rois):
    w, h = x2 - x1, y2 - y1
    xs, ys, scores = [], [], []
    for j in range(POINTS):
      flat = heatmaps[j].reshape(-1)
      k = int(np.argmax(flat))
      scores.append(1 / (1 + np.exp(-flat[k])))
      xs.append((k % WINDOW + ORIGIN[j // 3] + 0.5) / WINDOW * w + x1 - w / 2)
      ys.append((k // WINDOW + ORIGIN[j % 3] + 0.5) / WINDOW * h + y1 - h / 2)
    vote = lambda values, points: (
        sum(values[p] * scores[p] for p in points) /
        sum(scores[p] for p in points))
    out.append([vote(xs, [0, 1, 2]), vote(ys, [0, 3, 6]),
                vote(xs, [6, 7, 8]), vote(ys, [2, 5, 8])])
  return np.array(out)
