"""Float64 forward of Grid R-CNN Plus's GridHead in torch's conventions.

NCHW maps, torch weight layouts (`[out, in, kh, kw]` convs, `[in, out, kh,
kw]` transposed convs), symmetric padding, grouped transposed convs by
point. Written from mmdetection's `GridHead` semantics; weights come from
the test in these layouts.
"""

import numpy as np

POINTS = 9


def conv2d(x, w, b, stride=1, pad=0, groups=1):
  """torch's conv2d of one `[C, H, W]` map."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
  out_c, in_per_group, kh, kw = w.shape
  h = (x.shape[1] - kh) // stride + 1
  wd = (x.shape[2] - kw) // stride + 1
  out = np.zeros((out_c, h, wd))
  per_group = out_c // groups
  for o in range(out_c):
    g = o // per_group
    channels = x[g * in_per_group:(g + 1) * in_per_group]
    for i in range(h):
      for j in range(wd):
        patch = channels[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
        out[o, i, j] = (patch * w[o]).sum() + b[o]
  return out


def conv_transpose2d(x, w, b, stride=2, pad=1):
  """torch's conv_transpose2d (one group) of one `[I, H, W]` map;
  `w` is `[I, O, kh, kw]`."""
  _, out_c, kh, kw = w.shape
  h, wd = x.shape[1:]
  full = np.zeros((out_c, (h - 1) * stride + kh, (wd - 1) * stride + kw))
  for i in range(h):
    for j in range(wd):
      full[:, i * stride:i * stride + kh, j * stride:j * stride + kw] += (
          np.einsum('c,cokl->okl', x[:, i, j], w))
  out_h, out_w = full.shape[1] - 2 * pad, full.shape[2] - 2 * pad
  return full[:, pad:pad + out_h, pad:pad + out_w] + b[:, None, None]


def group_norm(x, groups, gamma, beta, eps=1e-5):
  c = x.shape[0]
  out = np.empty_like(x)
  size = c // groups
  for g in range(groups):
    part = x[g * size:(g + 1) * size]
    mean = part.mean()
    var = ((part - mean)**2).mean()
    out[g * size:(g + 1) * size] = (part - mean) / np.sqrt(var + eps)
  return out * gamma[:, None, None] + beta[:, None, None]


def _heatmaps(points, w):
  """deconv1 per point -> GroupNorm(9) -> ReLU -> deconv2 per point."""
  x = np.concatenate([conv_transpose2d(p, *w['deconv1'][k])
                      for k, p in enumerate(points)])
  x = np.maximum(group_norm(x, POINTS, *w['deconv1_norm']), 0)
  c = x.shape[0] // POINTS
  return np.concatenate([conv_transpose2d(x[k * c:(k + 1) * c],
                                          *w['deconv2'][k])
                         for k in range(POINTS)])


def grid_head(x, w, neighbours, norm_groups):
  """`{'fused', 'unfused'}` `[9, 28, 28]` logits of one `[C, 14, 14]` RoI.

  `w['convs']`: [(kernel, bias, gamma, beta)]; `w['first_order'][(i, j)]`
  and `w['second_order'][(i, j)]`: (depthwise kernel `[C, 1, 5, 5]`, bias,
  pointwise kernel `[C, C, 1, 1]`, bias) of the edge from point j to i.
  """
  for k, (kernel, bias, gamma, beta) in enumerate(w['convs']):
    x = conv2d(x, kernel, bias, stride=2 if k == 0 else 1, pad=1)
    x = np.maximum(group_norm(x, norm_groups, gamma, beta), 0)
  c = x.shape[0] // POINTS
  points = [x[k * c:(k + 1) * c] for k in range(POINTS)]

  def edge(weights, features):
    dw, db, pw, pb = weights
    return conv2d(conv2d(features, dw, db, pad=2, groups=c), pw, pb)

  first = [points[i] + sum(edge(w['first_order'][(i, j)], points[j])
                           for j in neighbours[i]) for i in range(POINTS)]
  second = [points[i] + sum(edge(w['second_order'][(i, j)], first[j])
                            for j in neighbours[i]) for i in range(POINTS)]
  return {'fused': _heatmaps(second, w), 'unfused': _heatmaps(points, w)}
