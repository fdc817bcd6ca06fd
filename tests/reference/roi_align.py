"""Float64 loop reference for mmcv RoIAlign (avg pooling; fixed or adaptive
sampling).

Written from mmcv's RoIAlign semantics (its C++/CUDA ``roi_align``: the mean
of fixed bilinear samples per bin, a sample within one pixel outside the map
clamped to the border, anything further out 0), with no TensorFlow.
RoIAlign is linear in the features, so the reference builds the explicit
operator ``M`` with ``pooled = M @ features``; its transpose gives the exact
gradient with respect to the features.
"""

import numpy as np


def _bilinear_weights(y, x, height, width):
  """mmcv's four taps for one sample: a list of ((row, col), weight)."""
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return []
  y = max(y, 0.0)
  x = max(x, 0.0)
  y_low = int(np.floor(y))
  x_low = int(np.floor(x))
  if y_low >= height - 1:
    y_low = y_high = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_low = x_high = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return [((y_low, x_low), hy * hx), ((y_low, x_high), hy * lx),
          ((y_high, x_low), ly * hx), ((y_high, x_high), ly * lx)]


def roi_align_operator(height, width, box, output_size, stride, sampling_ratio,
                       aligned):
  """`[P*P, H*W]` float64 matrix that pools one box from an H x W map."""
  scale = 1.0 / stride
  offset = 0.5 if aligned else 0.0
  y1, x1, y2, x2 = [float(v) for v in box]
  start_y, start_x = y1 * scale - offset, x1 * scale - offset
  extent_h = y2 * scale - offset - start_y
  extent_w = x2 * scale - offset - start_x
  if not aligned:
    extent_h, extent_w = max(extent_h, 1.0), max(extent_w, 1.0)
  bin_h, bin_w = extent_h / output_size, extent_w / output_size
  if sampling_ratio > 0:
    grid_h = grid_w = sampling_ratio
  else:  # mmcv's adaptive rule; no sample at all for an empty extent
    grid_h, grid_w = int(np.ceil(bin_h)), int(np.ceil(bin_w))
  count = max(grid_h * grid_w, 1)
  operator = np.zeros((output_size * output_size, height * width))
  for ph in range(output_size):
    for pw in range(output_size):
      row = operator[ph * output_size + pw]
      for iy in range(grid_h):
        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
        for ix in range(grid_w):
          x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
          for (r, c), w in _bilinear_weights(y, x, height, width):
            row[r * width + c] += w / count
  return operator


def roi_align(features, boxes, output_size, stride, sampling_ratio=2,
              aligned=True):
  """Float64 RoIAlign: features `[B, H, W, C]`, boxes `[B, N, 4]` (y1x1y2x2).

  Returns `[B, N, P, P, C]`.
  """
  features = np.asarray(features, np.float64)
  boxes = np.asarray(boxes, np.float64)
  batch, height, width, channels = features.shape
  num_boxes = boxes.shape[1]
  out = np.zeros((batch, num_boxes, output_size, output_size, channels))
  for b in range(batch):
    flat = features[b].reshape(height * width, channels)
    for n in range(num_boxes):
      op = roi_align_operator(height, width, boxes[b, n], output_size, stride,
                              sampling_ratio, aligned)
      out[b, n] = (op @ flat).reshape(output_size, output_size, channels)
  return out


def roi_align_feature_gradient(feature_shape, boxes, upstream, output_size,
                               stride, sampling_ratio=2, aligned=True):
  """d(sum(upstream * roi_align(features)))/d(features): `[B, H, W, C]`."""
  batch, height, width, channels = feature_shape
  boxes = np.asarray(boxes, np.float64)
  upstream = np.asarray(upstream, np.float64)
  grad = np.zeros((batch, height * width, channels))
  for b in range(batch):
    for n in range(boxes.shape[1]):
      op = roi_align_operator(height, width, boxes[b, n], output_size, stride,
                              sampling_ratio, aligned)
      grad[b] += op.T @ upstream[b, n].reshape(-1, channels)
  return grad.reshape(feature_shape)


def fpn_levels(boxes, min_level, max_level, canonical_size=224.0,
               canonical_level=4):
  """Float64 FPN Eq. 1 with mmdetection's 1e-6, clipped; `[...]` ints."""
  boxes = np.asarray(boxes, np.float64)
  area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
  scale = np.sqrt(np.maximum(area, 0.0))
  levels = canonical_level + np.floor(np.log2(scale / canonical_size + 1e-6))
  return np.clip(levels, min_level, max_level).astype(np.int64)
