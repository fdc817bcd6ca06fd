"""Float64 reference of the whole GRoIE forward pass (paper section III).

Composes the RoIAlign and attention references with a loop convolution;
module weights are read from the layer under test, nothing else is.
"""

import numpy as np

from tests.reference import attention
from tests.reference import roi_align


def conv2d_same_relu(x, kernel, bias):
  """`[N, H, W, C]` conv with `[k, k, C, O]` kernel, zero 'same' pad, ReLU."""
  k = kernel.shape[0]
  pad = k // 2
  n, h, w, _ = x.shape
  padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  out = np.zeros((n, h, w, kernel.shape[-1]))
  for dy in range(k):
    for dx in range(k):
      out += padded[:, dy:dy + h, dx:dx + w, :] @ kernel[dy, dx]
  return np.maximum(out + bias, 0.0)


def module_fn(module, kind, num_heads=6, mmcv_compat=False):
  """A float64 numpy function computing the Keras `module` of type `kind`."""
  as64 = lambda v: np.asarray(v, np.float64)
  if kind == 'none':
    return lambda x: x
  if kind.startswith('conv'):
    kernel, bias = as64(module.kernel), as64(module.bias)
    return lambda x: conv2d_same_relu(x, kernel, bias)
  if kind == 'non_local':
    weights = {'out': as64(module.conv_out.kernel),
               'out_bias': as64(module.conv_out.bias)}
    for name in ('theta', 'phi', 'g'):
      weights[name] = as64(getattr(module, name).kernel)
      weights[name + '_bias'] = as64(getattr(module, name).bias)
    return lambda x: attention.non_local(x, weights)
  weights = {'query': as64(module.query_conv.kernel),
             'value': as64(module.value_conv.kernel),
             'fc_x': as64(module.appr_geom_fc_x.kernel),
             'fc_y': as64(module.appr_geom_fc_y.kernel),
             'proj': as64(module.proj_conv.kernel),
             'proj_bias': as64(module.proj_conv.bias),
             'gamma': float(module.gamma.numpy()[0])}
  return lambda x: attention.generalized_attention(
      x, weights, num_heads, '0100', kv_stride=2, mmcv_compat=mmcv_compat)


def groie(features, boxes, layer, chosen_levels=None):
  """GRoIE forward of `layer`'s configuration and weights, in float64.

  Args:
    features: dict level string -> `[B, H, W, C]` arrays.
    boxes: `[B, N, 4]` boxes in input pixels.
    layer: a built `groie_tf.layers.GRoIE` (configuration and weights).
    chosen_levels: `[B, N]` levels kept per RoI for level_selection
      'random'; 'heuristic' computes them with the FPN rule.

  Returns:
    `[B, N, S, S, C]`.
  """
  levels = list(range(layer.min_level, layer.max_level + 1))
  size = layer.crop_size
  batch, num_boxes = boxes.shape[:2]
  pre_fns = [module_fn(m, layer.pre_processing, layer.attention_num_heads,
                       layer.mmcv_compat) for m in layer.pre_modules]
  if layer.share_pre_processing:
    pre_fns = pre_fns * len(levels)
  post_fn = module_fn(layer.post_module, layer.post_processing,
                      layer.attention_num_heads, layer.mmcv_compat)
  if layer.level_selection == 'heuristic':
    chosen_levels = roi_align.fpn_levels(boxes, layer.min_level,
                                         layer.max_level)

  per_level = []
  for level, pre in zip(levels, pre_fns):
    pooled = roi_align.roi_align(features[str(level)], boxes, size, 2**level,
                                 layer.sampling_ratio, layer.aligned)
    processed = pre(pooled.reshape(batch * num_boxes, size, size, -1))
    processed = processed.reshape(batch, num_boxes, size, size, -1)
    if layer.level_selection != 'all':
      keep = (np.asarray(chosen_levels) == level).astype(np.float64)
      processed = processed * keep[:, :, None, None, None]
    per_level.append(processed)

  if layer.aggregation == 'concat':
    aggregate = np.concatenate(per_level, -1)
  else:
    aggregate = sum(per_level[1:], per_level[0])
  aggregate = aggregate.reshape(batch * num_boxes, size, size, -1)
  if layer.aggregation != 'sum':
    conv = layer.aggregation_conv
    aggregate = conv2d_same_relu(aggregate, np.asarray(conv.kernel, np.float64),
                                 np.asarray(conv.bias, np.float64))
  out = post_fn(aggregate)
  return out.reshape(batch, num_boxes, size, size, -1)
