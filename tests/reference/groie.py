"""Float64 reference of the whole GRoIE forward pass (paper section III).

Everything structural comes from the layer's configuration (the dict of
`get_config()`): which levels are pooled, which modules exist, how many
(shared or one per level), their kernel sizes (from the option names) and
the shape of every weight. The layer under test supplies only the values of
its weights, looked up by name; a weight the configuration does not imply,
one it implies that is missing, or one of another shape fails the test.

Composes the RoIAlign and attention references with a loop convolution.
"""

from typing import Callable, Dict, Mapping

import numpy as np

from tests.reference import attention
from tests.reference import roi_align

# mmdetection's non-local block halves the channels (reduction 2).
NON_LOCAL_REDUCTION = 2


def weights_by_name(layer) -> Dict[str, np.ndarray]:
  """`{'pre_processing/kernel': float64 array, ...}`: the layer's weights,
  named relative to the layer."""
  prefix = layer.name + '/'
  named = {}
  for weight in layer.weights:
    name = weight.name.split(':')[0]
    assert name.startswith(prefix), name
    named[name[len(prefix):]] = np.asarray(weight.numpy(), np.float64)
  return named


class _Weights:
  """Hands out weights by name, checking each shape; `finish()` checks that
  every weight was used."""

  def __init__(self, weights: Mapping[str, np.ndarray]):
    self._unused = dict(weights)

  def take(self, name, shape):
    assert name in self._unused, (
        f'the configuration implies weight {name!r} {shape}, the layer has '
        f'none (unused: {sorted(self._unused)})')
    value = self._unused.pop(name)
    assert value.shape == tuple(shape), (
        f'{name}: the configuration implies shape {tuple(shape)}, the layer '
        f'has {value.shape}')
    return value

  def finish(self):
    assert not self._unused, (
        f'weights the configuration does not imply: {sorted(self._unused)}')


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


def _attention_inner(channels, num_heads):
  """Channels of the attention's query/value projections: heads x (C // heads)."""
  return num_heads * (channels // num_heads)


def module(kind: str, name: str, channels: int, weights: _Weights,
           config: Mapping) -> Callable[[np.ndarray], np.ndarray]:
  """A float64 function computing module `kind` named `name` (C -> C)."""
  c = channels
  if kind == 'none':
    return lambda x: x
  if kind.startswith('conv'):
    k = {'conv1x1': 1, 'conv3x3': 3, 'conv5x5': 5}[kind]
    kernel = weights.take(f'{name}/kernel', (k, k, c, c))
    bias = weights.take(f'{name}/bias', (c,))
    return lambda x: conv2d_same_relu(x, kernel, bias)
  if kind == 'non_local':
    inner = c // NON_LOCAL_REDUCTION
    w = {'out': weights.take(f'{name}/conv_out/kernel', (inner, c)),
         'out_bias': weights.take(f'{name}/conv_out/bias', (c,))}
    for part in ('theta', 'phi', 'g'):
      w[part] = weights.take(f'{name}/{part}/kernel', (c, inner))
      w[part + '_bias'] = weights.take(f'{name}/{part}/bias', (inner,))
    return lambda x: attention.non_local(x, w)
  assert kind == 'attention', kind
  inner = _attention_inner(c, config['attention_num_heads'])
  w = {'query': weights.take(f'{name}/query_conv/kernel', (c, inner)),
       'value': weights.take(f'{name}/value_conv/kernel', (c, inner)),
       'fc_x': weights.take(f'{name}/appr_geom_fc_x/kernel', (c // 2, inner)),
       'fc_y': weights.take(f'{name}/appr_geom_fc_y/kernel', (c // 2, inner)),
       'proj': weights.take(f'{name}/proj_conv/kernel', (inner, c)),
       'proj_bias': weights.take(f'{name}/proj_conv/bias', (c,)),
       'gamma': float(weights.take(f'{name}/gamma', (1,))[0])}
  return lambda x: attention.generalized_attention(
      x, w, config['attention_num_heads'], '0100', kv_stride=2,
      mmcv_compat=config['mmcv_compat'])


def module_parameters(kind: str, channels: int, num_heads: int) -> int:
  """Parameter count of one C -> C module, from the formulas of its layers."""
  c = channels
  if kind == 'none':
    return 0
  if kind.startswith('conv'):
    k = int(kind[-1])
    return k * k * c * c + c
  if kind == 'non_local':
    inner = c // NON_LOCAL_REDUCTION
    return 3 * (c * inner + inner) + inner * c + c
  inner = _attention_inner(c, num_heads)
  # query, value, proj (+ bias), two position fcs over C/2 inputs, gamma.
  return 3 * c * inner + c + 2 * (c // 2) * inner + 1


def parameter_count(config: Mapping, channels: int) -> int:
  """Trainable parameters a GRoIE of `config` has at `channels` channels."""
  num_levels = config['max_level'] - config['min_level'] + 1
  heads = config['attention_num_heads']
  pre = module_parameters(config['pre_processing'], channels, heads)
  count = pre if config['share_pre_processing'] else num_levels * pre
  if config['aggregation'] == 'sum+':
    count += channels * channels + channels
  elif config['aggregation'] == 'concat':
    count += num_levels * channels * channels + channels
  return count + module_parameters(config['post_processing'], channels, heads)


def groie(features, boxes, config: Mapping, weights: Mapping[str, np.ndarray],
          chosen_levels=None):
  """GRoIE forward of configuration `config` with `weights`, in float64.

  Args:
    features: dict level string -> `[B, H, W, C]` arrays.
    boxes: `[B, N, 4]` boxes in input pixels.
    config: the layer's `get_config()`.
    weights: `weights_by_name(layer)`: every weight, by name.
    chosen_levels: `[B, N]` levels kept per RoI for level_selection
      'random'; 'heuristic' computes them with the FPN rule.

  Returns:
    `[B, N, S, S, C]`.
  """
  levels = list(range(config['min_level'], config['max_level'] + 1))
  size = config['crop_size']
  batch, num_boxes = boxes.shape[:2]
  channels = features[str(levels[0])].shape[-1]
  weights = _Weights(weights)
  if config['share_pre_processing']:
    pre_fns = [module(config['pre_processing'], 'pre_processing', channels,
                      weights, config)] * len(levels)
  else:
    pre_fns = [module(config['pre_processing'], f'pre_processing_level_{l}',
                      channels, weights, config) for l in levels]
  if config['aggregation'] == 'sum':
    aggregation_fn = lambda x: x
  else:
    inputs = channels * (len(levels) if config['aggregation'] == 'concat'
                         else 1)
    kernel = weights.take('aggregation_conv/kernel', (1, 1, inputs, channels))
    bias = weights.take('aggregation_conv/bias', (channels,))
    aggregation_fn = lambda x: conv2d_same_relu(x, kernel, bias)
  post_fn = module(config['post_processing'], 'post_processing', channels,
                   weights, config)
  weights.finish()

  selection = config['level_selection']
  if selection == 'heuristic':
    chosen_levels = roi_align.fpn_levels(boxes, levels[0], levels[-1],
                                         config['canonical_size'])
  per_level = []
  for level, pre in zip(levels, pre_fns, strict=True):
    pooled = roi_align.roi_align(features[str(level)], boxes, size, 2**level,
                                 config['sampling_ratio'], config['aligned'])
    processed = pre(pooled.reshape(batch * num_boxes, size, size, channels))
    processed = processed.reshape(batch, num_boxes, size, size, channels)
    if selection != 'all':
      keep = (np.asarray(chosen_levels) == level).astype(np.float64)
      processed = processed * keep[:, :, None, None, None]
    per_level.append(processed)

  if config['aggregation'] == 'concat':
    aggregate = np.concatenate(per_level, -1)
  else:
    aggregate = sum(per_level[1:], per_level[0])
  aggregate = aggregate.reshape(batch * num_boxes, size, size, -1)
  out = post_fn(aggregation_fn(aggregate))
  return out.reshape(batch, num_boxes, size, size, channels)
