"""An mmdetection state dict, as numpy arrays, into an mmdetection-layout
model (`task.model.layout: mmdetection`).

Every tensor is assigned to a Keras object found by structure, not by
auto-numbered variable names, with the transform its layout needs:

- conv kernels `[out, in, kh, kw]` -> `[kh, kw, in, out]`; transposed-conv
  kernels `[in, out, kh, kw]` -> `[kh, kw, out, in]` (the same transpose,
  no spatial flip), a grouped one split into a kernel per group;
  depth-wise kernels `[C, 1, kh, kw]` -> `[kh, kw, C, 1]`; FC weights
  `[out, in]` -> `[in, out]`; 1x1 convs that are `Dense` here ->
  `[in, out]`;
- the box head's first FC reads the RoI features flattened (C, H, W) in
  mmdetection, (H, W, C) here: its input rows are permuted;
- classes: mmdetection's C classes come first and the background last;
  here the background is column 0 and class i is column
  `class_columns[i]` (i + 1 by default; COCO's category ids for the
  published checkpoints). Columns no class maps to get a zero kernel and a
  bias of -1e4 (softmax probability 0);
- deltas: mmdetection's (dx, dy, dw, dh) -> (dy, dx, dh, dw) per anchor
  and per class.

`load_state_dict` refuses a state dict with a key it did not use, or a
model variable it did not set, naming each: nothing is skipped silently.
"""

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import resnet as mg_resnet
from official.vision.modeling.layers import nn_blocks

from groie_tf.layers import GRoIE
from groie_tf.layers import GeneralizedAttention
from groie_tf.layers import GridHead
from groie_tf.modeling.mmdetection_layout import heads

# Per anchor or class: (dy, dx, dh, dw) here from (dx, dy, dw, dh) there.
DELTA_ORDER = (1, 0, 3, 2)
UNUSED_CLASS_BIAS = -1e4


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  """`[out, in, kh, kw]` -> `[kh, kw, in, out]`."""
  return weight.transpose(2, 3, 1, 0)


def pointwise_kernel(weight: np.ndarray) -> np.ndarray:
  """A 1x1 conv `[out, in, 1, 1]` -> a `Dense` kernel `[in, out]`."""
  return weight[:, :, 0, 0].T


def depthwise_kernel(weight: np.ndarray) -> np.ndarray:
  """A depth-wise conv `[C, 1, kh, kw]` -> `[kh, kw, C, 1]`."""
  return weight.transpose(2, 3, 0, 1)


def grouped_transposed_kernels(weight: np.ndarray,
                               groups: int) -> List[np.ndarray]:
  """A grouped transposed conv `[in, out / groups, kh, kw]` -> one
  `[kh, kw, out / groups, in / groups]` kernel per group, in group order:
  group g reads input channels `[g * in / groups, (g + 1) * in / groups)`
  (the GridHead's one `Conv2DTranspose` per grid point)."""
  return [w.transpose(2, 3, 1, 0) for w in np.split(weight, groups)]


def flattened_fc_kernel(weight: np.ndarray, channels: int,
                        size: int) -> np.ndarray:
  """The first FC after the RoI features: `[out, C*S*S]` read (C, H, W) ->
  `[S*S*C, out]` read (H, W, C)."""
  out = weight.shape[0]
  return weight.reshape(out, channels, size, size).transpose(
      2, 3, 1, 0).reshape(size * size * channels, out)


def delta_rows(num_groups: int) -> np.ndarray:
  """Rows of mmdetection's deltas in this layout's order, for `num_groups`
  anchors or classes: row `4g + k'` reads row `4g + DELTA_ORDER[k']`."""
  return (4 * np.arange(num_groups)[:, None] +
          np.array(DELTA_ORDER)[None, :]).reshape(-1)


class StateDict:
  """The tensors of a state dict, each taken at most once."""

  def __init__(self, tensors: Mapping[str, np.ndarray]):
    self._tensors = {k: np.asarray(v) for k, v in tensors.items()
                     if not k.endswith('num_batches_tracked')}
    self._taken = set()

  def take(self, key: str) -> np.ndarray:
    if key not in self._tensors:
      raise KeyError(f'the state dict has no {key!r}.')
    self._taken.add(key)
    return self._tensors[key].astype(np.float32)

  def untaken(self) -> List[str]:
    return sorted(set(self._tensors) - self._taken)


class _Assigner:
  """Assigns values to variables, checking shapes, remembering which."""

  def __init__(self):
    self.assigned = set()

  def __call__(self, variable: tf.Variable, value: np.ndarray, key: str):
    if tuple(variable.shape) != value.shape:
      raise ValueError(f'{key}: shape {value.shape} after conversion, but '
                       f'{variable.name} is {tuple(variable.shape)}.')
    variable.assign(value)
    self.assigned.add(id(variable))

  def conv(self, layer, tensors: StateDict, prefix: str, bias=True):
    self(layer.kernel, conv_kernel(tensors.take(prefix + 'weight')),
         prefix + 'weight')
    if bias:
      self(layer.bias, tensors.take(prefix + 'bias'), prefix + 'bias')

  def dense(self, layer, tensors: StateDict, prefix: str, bias=True):
    self(layer.kernel, tensors.take(prefix + 'weight').T, prefix + 'weight')
    if bias:
      self(layer.bias, tensors.take(prefix + 'bias'), prefix + 'bias')

  def pointwise(self, layer, tensors: StateDict, prefix: str, bias=True):
    self(layer.kernel, pointwise_kernel(tensors.take(prefix + 'weight')),
         prefix + 'weight')
    if bias:
      self(layer.bias, tensors.take(prefix + 'bias'), prefix + 'bias')

  def batch_norm(self, layer, tensors: StateDict, prefix: str):
    for variable, name in ((layer.gamma, 'weight'), (layer.beta, 'bias'),
                           (layer.moving_mean, 'running_mean'),
                           (layer.moving_variance, 'running_var')):
      self(variable, tensors.take(prefix + name), prefix + name)

  def group_norm(self, layer, tensors: StateDict, prefix: str):
    self(layer.gamma, tensors.take(prefix + 'weight'), prefix + 'weight')
    self(layer.beta, tensors.take(prefix + 'bias'), prefix + 'bias')


def _load_backbone(backbone, tensors: StateDict, assign: _Assigner,
                   prefix: str = 'backbone.'):
  layers = backbone.layers
  stem_conv = next(l for l in layers
                   if isinstance(l, tf_keras.layers.Conv2D))
  stem_norm = next(l for l in layers
                   if isinstance(l, tf_keras.layers.BatchNormalization))
  assign.conv(stem_conv, tensors, prefix + 'conv1.', bias=False)
  assign.batch_norm(stem_norm, tensors, prefix + 'bn1.')
  blocks = [l for l in layers if isinstance(
      l, (nn_blocks.BottleneckBlock, nn_blocks.ResidualBlock))]
  names = [f'layer{stage + 1}.{index}.'
           for stage, (_, _, repeats) in enumerate(
               mg_resnet.RESNET_SPECS[backbone.get_config()['model_id']])
           for index in range(repeats)]
  if len(names) != len(blocks):
    raise ValueError(f'the backbone has {len(blocks)} blocks, its depth '
                     f'{len(names)}.')
  for block, name in zip(blocks, names):
    block_prefix = prefix + name
    convs = 3 if isinstance(block, nn_blocks.BottleneckBlock) else 2
    for i in range(1, convs + 1):
      assign.conv(getattr(block, f'_conv{i}'), tensors,
                  f'{block_prefix}conv{i}.', bias=False)
      assign.batch_norm(getattr(block, f'_norm{i}'), tensors,
                        f'{block_prefix}bn{i}.')
    if block._use_projection:  # pylint: disable=protected-access
      assign.conv(block._shortcut, tensors,  # pylint: disable=protected-access
                  block_prefix + 'downsample.0.', bias=False)
      assign.batch_norm(
          block._norm0, tensors,  # pylint: disable=protected-access
          block_prefix + 'downsample.1.')
    if hasattr(block, 'context_block'):
      _load_context_block(block.context_block, tensors, assign,
                          block_prefix + 'context_block.')


def _load_context_block(block, tensors: StateDict, assign: _Assigner,
                        prefix: str):
  if block.pooling_type == 'att':
    assign.pointwise(block.conv_mask, tensors, prefix + 'conv_mask.')
  for fusion, transform in block.transforms.items():
    conv = f'{prefix}{fusion}_conv.'
    assign.pointwise(transform.conv1, tensors, conv + '0.')
    # LayerNorm([planes, 1, 1]): weight and bias [planes, 1, 1].
    assign(transform.norm.gamma,
           tensors.take(conv + '1.weight').reshape(-1), conv + '1.weight')
    assign(transform.norm.beta,
           tensors.take(conv + '1.bias').reshape(-1), conv + '1.bias')
    assign.pointwise(transform.conv2, tensors, conv + '3.')


def _load_fpn(fpn, tensors: StateDict, assign: _Assigner,
              prefix: str = 'neck.'):
  # pylint: disable=protected-access
  for i, (lateral, post_hoc) in enumerate(zip(fpn._laterals, fpn._post_hoc)):
    assign.conv(lateral, tensors, f'{prefix}lateral_convs.{i}.conv.')
    assign.conv(post_hoc, tensors, f'{prefix}fpn_convs.{i}.conv.')


def _load_rpn(head: heads.RPNHead, tensors: StateDict, assign: _Assigner,
              prefix: str = 'rpn_head.'):
  # pylint: disable=protected-access
  assign.conv(head._conv, tensors, prefix + 'rpn_conv.')
  assign.conv(head._scores, tensors, prefix + 'rpn_cls.')
  weight = tensors.take(prefix + 'rpn_reg.weight')
  rows = delta_rows(weight.shape[0] // 4)
  assign(head._boxes.kernel, conv_kernel(weight[rows]),
         prefix + 'rpn_reg.weight')
  assign(head._boxes.bias, tensors.take(prefix + 'rpn_reg.bias')[rows],
         prefix + 'rpn_reg.bias')


def _load_extractor(extractor, tensors: StateDict, assign: _Assigner,
                    prefix: str):
  """GRoIE's weights (`GenericRoIExtractor`'s); the single-level
  extractor (`SingleRoIExtractor`) has none."""
  if not isinstance(extractor, GRoIE):
    raise ValueError(f'{prefix}: expected a GRoIE extractor, got '
                     f'{type(extractor).__name__}.')
  if extractor.pre_modules[0] is not None:
    if len(extractor.pre_modules) != 1:
      raise ValueError(f'{prefix}: mmdetection shares one pre_module across '
                       'levels (share_pre_processing: true).')
    _load_module(extractor.pre_modules[0], tensors, assign,
                 prefix + 'pre_module.')
  if extractor.post_module is not None:
    _load_module(extractor.post_module, tensors, assign,
                 prefix + 'post_module.')


def _load_module(module, tensors: StateDict, assign: _Assigner, prefix: str):
  if isinstance(module, tf_keras.layers.Conv2D):
    assign.conv(module, tensors, prefix + 'conv.')
    return
  if not isinstance(module, GeneralizedAttention):
    raise ValueError(f'{prefix}: no mmdetection mapping for '
                     f'{type(module).__name__}.')
  for name in ('query_conv', 'key_conv', 'value_conv'):
    layer = getattr(module, name, None)
    if layer is not None:
      assign.pointwise(layer, tensors, f'{prefix}{name}.', bias=False)
  assign.pointwise(module.proj_conv, tensors, prefix + 'proj_conv.')
  for name in ('appr_geom_fc_x', 'appr_geom_fc_y'):
    layer = getattr(module, name, None)
    if layer is not None:
      assign.dense(layer, tensors, f'{prefix}{name}.', bias=False)
  for name in ('appr_bias', 'geom_bias'):
    variable = getattr(module, name, None)
    if variable is not None:
      assign(variable, tensors.take(prefix + name).reshape(variable.shape),
             prefix + name)
  assign(module.gamma, tensors.take(prefix + 'gamma'), prefix + 'gamma')


def _class_columns(num_classes: int, model_classes: int,
                   class_columns: Optional[Sequence[int]]) -> np.ndarray:
  columns = (np.arange(1, num_classes + 1) if class_columns is None else
             np.asarray(class_columns))
  if (len(columns) != num_classes or len(set(columns.tolist())) != len(columns)
      or columns.min() < 1 or columns.max() >= model_classes):
    raise ValueError(f'class_columns must map the checkpoint\'s {num_classes}'
                     f' classes to distinct columns 1..{model_classes - 1}, '
                     f'got {columns.tolist()}.')
  return columns


def _load_box_head(head: heads.Shared2FCBBoxHead, tensors: StateDict,
                   assign: _Assigner, roi_channels: int, roi_size: int,
                   class_columns, prefix: str = 'roi_head.bbox_head.'):
  # pylint: disable=protected-access
  for i, fc in enumerate(head._fcs):
    key = f'{prefix}shared_fcs.{i}.'
    weight = tensors.take(key + 'weight')
    kernel = (flattened_fc_kernel(weight, roi_channels, roi_size) if i == 0
              else weight.T)
    assign(fc.kernel, kernel, key + 'weight')
    assign(fc.bias, tensors.take(key + 'bias'), key + 'bias')
  weight = tensors.take(prefix + 'fc_cls.weight')  # [C + 1, U], bg last
  bias = tensors.take(prefix + 'fc_cls.bias')
  model_classes = head._classifier.units
  columns = _class_columns(weight.shape[0] - 1, model_classes, class_columns)
  kernel = np.zeros([weight.shape[1], model_classes], np.float32)
  full_bias = np.full([model_classes], UNUSED_CLASS_BIAS, np.float32)
  kernel[:, 0], full_bias[0] = weight[-1], bias[-1]
  kernel[:, columns], full_bias[columns] = weight[:-1].T, bias[:-1]
  assign(head._classifier.kernel, kernel, prefix + 'fc_cls.weight')
  assign(head._classifier.bias, full_bias, prefix + 'fc_cls.bias')
  if head._box_regressor is None:
    return  # with_reg=False: the state dict has no fc_reg either
  weight = tensors.take(prefix + 'fc_reg.weight')  # [4C, U]
  bias = tensors.take(prefix + 'fc_reg.bias')
  rows = delta_rows(len(columns))
  targets = (4 * columns[:, None] + np.arange(4)[None, :]).reshape(-1)
  kernel = np.zeros([weight.shape[1], 4 * model_classes], np.float32)
  full_bias = np.zeros([4 * model_classes], np.float32)
  kernel[:, targets], full_bias[targets] = weight[rows].T, bias[rows]
  assign(head._box_regressor.kernel, kernel, prefix + 'fc_reg.weight')
  assign(head._box_regressor.bias, full_bias, prefix + 'fc_reg.bias')


def _load_mask_head(head: heads.FCNMaskHead, tensors: StateDict,
                    assign: _Assigner, class_columns,
                    prefix: str = 'roi_head.mask_head.'):
  # pylint: disable=protected-access
  for i, conv in enumerate(head._convs):
    assign.conv(conv, tensors, f'{prefix}convs.{i}.conv.')
  assign.conv(head._deconv, tensors, prefix + 'upsample.')
  weight = tensors.take(prefix + 'conv_logits.weight')  # [C, U, 1, 1]
  bias = tensors.take(prefix + 'conv_logits.bias')
  model_classes = head._mask_regressor.filters
  columns = _class_columns(weight.shape[0], model_classes, class_columns)
  kernel = np.zeros([1, 1, weight.shape[1], model_classes], np.float32)
  full_bias = np.zeros([model_classes], np.float32)
  kernel[0, 0][:, columns], full_bias[columns] = weight[:, :, 0, 0].T, bias
  assign(head._mask_regressor.kernel, kernel, prefix + 'conv_logits.weight')
  assign(head._mask_regressor.bias, full_bias, prefix + 'conv_logits.bias')


def _load_grid_head(head: GridHead, tensors: StateDict, assign: _Assigner,
                    prefix: str = 'roi_head.grid_head.'):
  """mmdetection's `GridHead`: its ConvModules (conv, then GroupNorm `gn`),
  the transitions `forder_trans.{i}.{j}` / `sorder_trans.{i}.{j}` (point
  i's j-th neighbour: a depth-wise 5x5 `.0`, a 1x1 `.1`), and the two
  transposed convs grouped by point, with `norm1` between them."""
  for i, (conv, norm) in enumerate(head.convs):
    assign.conv(conv, tensors, f'{prefix}convs.{i}.conv.')
    assign.group_norm(norm, tensors, f'{prefix}convs.{i}.gn.')
  for name, transitions in (('forder_trans', head.first_order),
                            ('sorder_trans', head.second_order)):
    for i, edges in enumerate(transitions):
      for j, (depthwise, pointwise) in enumerate(edges):
        key = f'{prefix}{name}.{i}.{j}.'
        assign(depthwise.depthwise_kernel,
               depthwise_kernel(tensors.take(key + '0.weight')),
               key + '0.weight')
        assign(depthwise.bias, tensors.take(key + '0.bias'), key + '0.bias')
        assign.conv(pointwise, tensors, key + '1.')
  for name, deconvs in (('deconv1', head.deconv1), ('deconv2', head.deconv2)):
    kernels = grouped_transposed_kernels(
        tensors.take(f'{prefix}{name}.weight'), len(deconvs))
    biases = np.split(tensors.take(f'{prefix}{name}.bias'), len(deconvs))
    for deconv, kernel, bias in zip(deconvs, kernels, biases):
      assign(deconv.kernel, kernel, f'{prefix}{name}.weight')
      assign(deconv.bias, bias, f'{prefix}{name}.bias')
  assign.group_norm(head.deconv1_norm, tensors, prefix + 'norm1.')


def load_state_dict(model, state_dict: Mapping[str, np.ndarray],
                    class_columns: Optional[Sequence[int]] = None) -> None:
  """Sets every variable of `model` from mmdetection's `state_dict`.

  Args:
    model: a built `MaskRCNNModel` of the mmdetection layout (Faster, Mask
      or Grid R-CNN; plain or GC ResNet; GRoIE or single-level extractors).
    state_dict: mmdetection's parameter and buffer names to numpy arrays in
      PyTorch's layouts (`num_batches_tracked` entries are ignored).
    class_columns: the model column of each of the checkpoint's classes,
      in its order; None maps class i to column i + 1.

  Raises:
    ValueError: naming every state-dict key left unused and every model
      variable left unset, or a tensor whose shape does not fit.
    KeyError: naming a key the model needs that the state dict lacks.
  """
  tensors = StateDict(state_dict)
  assign = _Assigner()
  _load_backbone(model.backbone, tensors, assign)
  _load_fpn(model.decoder, tensors, assign)
  _load_rpn(model.rpn_head, tensors, assign)
  _load_extractor(model.roi_aligner, tensors, assign,
                  'roi_head.bbox_roi_extractor.')
  (box_head,) = model.detection_head
  channels = model.decoder.get_config()['num_filters']
  _load_box_head(box_head, tensors, assign, channels,
                 model.roi_aligner.crop_size, class_columns)
  if model.mask_head is not None:
    _load_extractor(model.mask_roi_aligner, tensors, assign,
                    'roi_head.mask_roi_extractor.')
    _load_mask_head(model.mask_head, tensors, assign, class_columns)
  grid_head = getattr(model, 'grid_head', None)
  if grid_head is not None:
    _load_extractor(model.grid_roi_aligner, tensors, assign,
                    'roi_head.grid_roi_extractor.')
    _load_grid_head(grid_head, tensors, assign)
  _check_complete(model, tensors, assign)


def _check_complete(model, tensors: StateDict, assign: _Assigner) -> None:
  unused = tensors.untaken()
  unset = [v.name for v in model.variables if id(v) not in assign.assigned]
  problems = []
  if unused:
    problems.append(f'{len(unused)} state-dict keys were not mapped: '
                    f'{", ".join(unused)}')
  if unset:
    problems.append(f'{len(unset)} model variables were not set: '
                    f'{", ".join(unset)}')
  if problems:
    raise ValueError('; '.join(problems) + '.')


def numpy_state_dict(arrays: Mapping[str, np.ndarray],
                     prefix: str = 'w/') -> Dict[str, np.ndarray]:
  """The state dict stored under `prefix` in a fixture's arrays."""
  return {k[len(prefix):]: v for k, v in arrays.items()
          if k.startswith(prefix)}
