"""Float64 numpy references for mmdetection's detector layers, written from
mmdetection 3.3's semantics (`mmdet/models/backbones/resnet.py`,
`necks/fpn.py`, `dense_heads/rpn_head.py`, `prior_generators/
anchor_generator.py`, `coders/delta_xywh_bbox_coder.py`, `bbox_heads/
convfc_bbox_head.py`, `mask_heads/fcn_mask_head.py`, `layers/bbox_nms.py`),
with no TensorFlow.

Maps are `[H, W, C]` (one image), kernels `[kh, kw, in, out]`, boxes
`[x1, y1, x2, y2]` and deltas `(dx, dy, dw, dh)`: mmdetection's box and
delta conventions, so that the tests check the layout changes too.
"""

import math

import numpy as np


def conv2d(x, kernel, bias=None, stride=1, padding=0):
  """PyTorch's Conv2d: `padding` zeros on every side, then a valid conv."""
  x = np.pad(np.asarray(x, np.float64),
             [(padding, padding), (padding, padding), (0, 0)])
  kh, kw, _, out = kernel.shape
  height = (x.shape[0] - kh) // stride + 1
  width = (x.shape[1] - kw) // stride + 1
  y = np.zeros((height, width, out))
  for i in range(kh):
    for j in range(kw):
      patch = x[i:i + stride * (height - 1) + 1:stride,
                j:j + stride * (width - 1) + 1:stride]
      y += patch @ np.asarray(kernel[i, j], np.float64)
  return y if bias is None else y + bias


def max_pool2d(x, size, stride, padding):
  """PyTorch's MaxPool2d: -inf padding."""
  x = np.pad(np.asarray(x, np.float64),
             [(padding, padding), (padding, padding), (0, 0)],
             constant_values=-np.inf)
  height = (x.shape[0] - size) // stride + 1
  width = (x.shape[1] - size) // stride + 1
  y = np.full((height, width, x.shape[2]), -np.inf)
  for i in range(size):
    for j in range(size):
      y = np.maximum(y, x[i:i + stride * (height - 1) + 1:stride,
                          j:j + stride * (width - 1) + 1:stride])
  return y


def batch_norm(x, gamma, beta, mean, variance, epsilon):
  return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def relu(x):
  return np.maximum(x, 0.0)


def nearest_resize(x, height, width):
  """`F.interpolate(mode='nearest')`: output i reads floor(i * in / out)."""
  rows = np.floor(np.arange(height) * (x.shape[0] / height)).astype(int)
  cols = np.floor(np.arange(width) * (x.shape[1] / width)).astype(int)
  return x[rows][:, cols]


def fpn(features, laterals, outputs, num_outs):
  """mmdetection's FPN(add_extra_convs=False).

  Args:
    features: list of backbone maps, finest first.
    laterals, outputs: lists of (kernel, bias) of the 1x1 and 3x3 convs.
    num_outs: outputs; those past the backbone's subsample by 2.
  """
  lateral = [conv2d(f, k, b) for f, (k, b) in zip(features, laterals)]
  for i in range(len(lateral) - 1, 0, -1):
    finer = lateral[i - 1]
    lateral[i - 1] = finer + nearest_resize(lateral[i], *finer.shape[:2])
  outs = [conv2d(l, k, b, padding=1) for l, (k, b) in zip(lateral, outputs)]
  while len(outs) < num_outs:
    outs.append(outs[-1][::2, ::2])  # max_pool2d(x, 1, stride=2)
  return outs


def anchors(height, width, stride, ratios, scales):
  """mmdetection's `AnchorGenerator` (center_offset 0): `[H*W*A, 4]` xyxy,
  (i, j, anchor) order, ratio-major; `ratios` are h/w."""
  h_ratios = np.sqrt(np.asarray(ratios, np.float64))
  w_ratios = 1.0 / h_ratios
  ws = (stride * w_ratios[:, None] * np.asarray(scales)[None, :]).reshape(-1)
  hs = (stride * h_ratios[:, None] * np.asarray(scales)[None, :]).reshape(-1)
  base = np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=1)
  out = []
  for i in range(height):
    for j in range(width):
      out.append(base + np.array([j, i, j, i], np.float64) * stride)
  return np.concatenate(out, 0)


def delta2bbox(priors, deltas, stds, max_shape):
  """`delta2bbox` of mmdetection 3.x: xyxy priors, (dx, dy, dw, dh)."""
  deltas = np.asarray(deltas, np.float64) * np.asarray(stds)
  clamp = abs(math.log(16 / 1000))
  pxy = (priors[:, :2] + priors[:, 2:]) * 0.5
  pwh = priors[:, 2:] - priors[:, :2]
  gxy = pxy + pwh * deltas[:, :2]
  gwh = pwh * np.exp(np.clip(deltas[:, 2:], -clamp, clamp))
  boxes = np.concatenate([gxy - gwh * 0.5, gxy + gwh * 0.5], axis=1)
  height, width = max_shape
  boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
  boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
  return boxes


def iou(box, boxes):
  """IoU of one xyxy box with `[N, 4]` boxes (no +1, as mmcv's `nms`)."""
  x1 = np.maximum(box[0], boxes[:, 0])
  y1 = np.maximum(box[1], boxes[:, 1])
  x2 = np.minimum(box[2], boxes[:, 2])
  y2 = np.minimum(box[3], boxes[:, 3])
  inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  return inter / (area(box) + area(boxes) - inter)


def nms(boxes, scores, threshold):
  """Greedy NMS: a box goes if its IoU with a kept one is > threshold.
  Returns kept indices by decreasing score (ties: lower index first)."""
  order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
  kept = []
  for i in order:
    if not kept or iou(boxes[i], boxes[kept]).max() <= threshold:
      kept.append(i)
  return kept


def multiclass_nms(boxes, scores, score_threshold, iou_threshold,
                   max_per_img):
  """mmdetection's `multiclass_nms` of one image: `boxes` `[N, K, 4]`,
  `scores` `[N, K]` (background excluded). The (RoI, class) pairs scoring
  above the threshold, a greedy NMS per class, then the best
  `max_per_img` of all classes by score. Returns `(boxes [D, 4], scores
  [D], classes [D])`."""
  boxes = np.asarray(boxes, np.float64)
  scores = np.asarray(scores, np.float64)
  kept = []
  for k in range(scores.shape[1]):
    rois = np.nonzero(scores[:, k] > score_threshold)[0]
    kept += [(rois[i], k) for i in nms(boxes[rois, k], scores[rois, k],
                                       iou_threshold)]
  kept.sort(key=lambda pair: -scores[pair])
  kept = kept[:max_per_img]
  return (np.array([boxes[i, k] for i, k in kept]).reshape(-1, 4),
          np.array([scores[i, k] for i, k in kept]),
          np.array([k for _, k in kept], int))


def rpn_proposals(scores, deltas, level_anchors, image_shape, nms_pre,
                  iou_threshold, max_per_img):
  """`RPNHead.predict_by_feat` for one image.

  Args:
    scores: per level, `[H*W*A]` logits in (i, j, anchor) order.
    deltas: per level, `[H*W*A, 4]` (dx, dy, dw, dh).
    level_anchors: per level, `[H*W*A, 4]` xyxy.
    image_shape: (height, width) proposals are clipped to.

  Returns:
    `[N, 5]` (x1, y1, x2, y2, score) by decreasing score.
  """
  kept = []
  for logits, delta, prior in zip(scores, deltas, level_anchors):
    probability = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    top = sorted(range(len(probability)),
                 key=lambda i: (-probability[i], i))[:nms_pre]
    boxes = delta2bbox(prior[top], np.asarray(delta)[top], (1, 1, 1, 1),
                       image_shape)
    probability = probability[top]
    size = boxes[:, 2:] - boxes[:, :2]
    valid = np.all(size > 0, axis=1)
    boxes, probability = boxes[valid], probability[valid]
    keep = nms(boxes, probability, iou_threshold)
    kept.append(np.concatenate([boxes[keep], probability[keep, None]], 1))
  proposals = np.concatenate(kept, 0)
  order = np.argsort(-proposals[:, 4], kind='stable')
  return proposals[order][:max_per_img]


def shared_fc_box_head(features, fcs, classifier, regressor):
  """Flatten, FCs + ReLU, class and box FCs: `[N, S, S, C]` features,
  `(kernel [in, out], bias)` pairs; the flatten order is the features'."""
  x = np.asarray(features, np.float64).reshape(len(features), -1)
  for kernel, bias in fcs:
    x = relu(x @ kernel + bias)
  return x @ classifier[0] + classifier[1], x @ regressor[0] + regressor[1]


def conv_transpose_2x2(x, kernel, bias):
  """ConvTranspose2d(kernel 2, stride 2): output (2i + a, 2j + b) is
  `x[i, j] @ kernel[a, b].T + bias`; `kernel` `[2, 2, out, in]` (Keras's
  Conv2DTranspose layout)."""
  height, width, _ = x.shape
  out = np.zeros((2 * height, 2 * width, kernel.shape[2]))
  for a in range(2):
    for b in range(2):
      out[a::2, b::2] = x @ np.asarray(kernel[a, b], np.float64).T
  return out + bias


def fcn_mask_head(features, convs, deconv, logits, classes):
  """`[N, S, S, C]` RoI features -> `[N, 2S, 2S]` logits of each RoI's
  class."""
  out = []
  for roi, cls in zip(features, classes):
    x = roi
    for kernel, bias in convs:
      x = relu(conv2d(x, kernel, bias, padding=1))
    x = relu(conv_transpose_2x2(x, *deconv))
    out.append(conv2d(x, *logits)[:, :, cls])
  return np.stack(out)
