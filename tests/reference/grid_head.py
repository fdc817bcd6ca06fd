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


def mmdet_neighbours(grid_size=3):
  """mmdetection's `GridHead.neighbor_points`: point `i * grid_size + j`
  (column i, row j) has its left, up, down and right neighbours, those
  that exist, in that order."""
  out = []
  for i in range(grid_size):
    for j in range(grid_size):
      neighbours = []
      if i > 0:
        neighbours.append((i - 1) * grid_size + j)
      if j > 0:
        neighbours.append(i * grid_size + j - 1)
      if j < grid_size - 1:
        neighbours.append(i * grid_size + j + 1)
      if i < grid_size - 1:
        neighbours.append((i + 1) * grid_size + j)
      out.append(neighbours)
  return out


def grouped_conv_transpose2d(x, w, b, groups, stride=2, pad=1):
  """torch's conv_transpose2d with `groups` of one `[I, H, W]` map: `w`
  `[I, O / groups, kh, kw]`, group g maps input channels
  `[g I / groups, (g + 1) I / groups)` to outputs `[g O / groups, ...)`;
  computed as one transposed conv of the block-diagonal `[I, O, kh, kw]`
  weight."""
  in_c, out_per_group, kh, kw = w.shape
  in_per_group = in_c // groups
  full = np.zeros((in_c, out_per_group * groups, kh, kw))
  for g in range(groups):
    rows = slice(g * in_per_group, (g + 1) * in_per_group)
    full[rows, g * out_per_group:(g + 1) * out_per_group] = w[rows]
  return conv_transpose2d(x, full, b, stride, pad)


def grid_head_from_state_dict(x, tensors, num_convs, norm_groups,
                              prefix='roi_head.grid_head.'):
  """mmdetection's `GridHead.forward` in training (fused and unfused
  heatmaps) of one `[C, 14, 14]` RoI, read from its state dict as
  mmdetection names and lays it out (`convs.{k}.conv/gn`,
  `forder_trans.{i}.{j}.0/1`, the grouped `deconv1`/`deconv2`, `norm1`)."""
  t = lambda name: np.asarray(tensors[prefix + name], np.float64)
  for k in range(num_convs):
    x = conv2d(x, t(f'convs.{k}.conv.weight'), t(f'convs.{k}.conv.bias'),
               stride=2 if k == 0 else 1, pad=1)
    x = np.maximum(group_norm(x, norm_groups, t(f'convs.{k}.gn.weight'),
                              t(f'convs.{k}.gn.bias')), 0)
  c = x.shape[0] // POINTS
  point = lambda features, i: features[i * c:(i + 1) * c]

  def edge(name, features):
    y = conv2d(features, t(name + '0.weight'), t(name + '0.bias'), pad=2,
               groups=c)
    return conv2d(y, t(name + '1.weight'), t(name + '1.bias'))

  neighbours = mmdet_neighbours()
  first = [point(x, i) + sum(edge(f'forder_trans.{i}.{j}.', point(x, n))
                             for j, n in enumerate(neighbours[i]))
           for i in range(POINTS)]
  second = [point(x, i) + sum(edge(f'sorder_trans.{i}.{j}.', first[n])
                              for j, n in enumerate(neighbours[i]))
            for i in range(POINTS)]

  def heatmaps(features):
    y = grouped_conv_transpose2d(features, t('deconv1.weight'),
                                 t('deconv1.bias'), POINTS)
    y = np.maximum(group_norm(y, POINTS, t('norm1.weight'), t('norm1.bias')),
                   0)
    return grouped_conv_transpose2d(y, t('deconv2.weight'), t('deconv2.bias'),
                                    POINTS)

  return {'fused': heatmaps(np.concatenate(second)), 'unfused': heatmaps(x)}
