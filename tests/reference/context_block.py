"""Float64 reference of GCNet's global context block.

Written from the semantics (Cao et al., "GCNet", ICCVW 2019; mmcv's
`ContextBlock`): one image and one channel at a time, with explicit loops
over positions, so that it shares nothing with the layer's einsum.
"""

import numpy as np


def _layer_norm(v, gamma, beta, eps=1e-5):
  """torch's LayerNorm over all of `v` (biased variance)."""
  mean = v.sum() / v.size
  var = ((v - mean)**2).sum() / v.size
  return (v - mean) / np.sqrt(var + eps) * gamma + beta


def _transform(context, w):
  """conv1 -> LayerNorm -> ReLU -> conv2 on a `[C]` context vector.

  `w` holds `conv1` `[C, P]`, `conv1_bias` `[P]`, `gamma`, `beta` `[P]`,
  `conv2` `[P, C]`, `conv2_bias` `[C]`.
  """
  hidden = np.array([sum(context[c] * w['conv1'][c, p]
                         for c in range(context.size)) + w['conv1_bias'][p]
                     for p in range(w['conv1'].shape[1])])
  hidden = np.maximum(_layer_norm(hidden, w['gamma'], w['beta']), 0.0)
  return np.array([sum(hidden[p] * w['conv2'][p, c]
                       for p in range(hidden.size)) + w['conv2_bias'][c]
                   for c in range(w['conv2'].shape[1])])


def context_block(x, weights, pooling_type, fusion_types):
  """GCNet's block on `x` `[N, H, W, C]`, float64.

  `weights['mask']` `[C]` and `weights['mask_bias']` (a float) are the
  attention conv ('att' only); `weights[fusion]` the transform of each
  fusion (see `_transform`).
  """
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  out = np.empty_like(x)
  for i in range(n):
    if pooling_type == 'avg':
      context = np.array([x[i, :, :, k].sum() / (h * w) for k in range(c)])
    else:
      logits = np.array([[x[i, y, z] @ weights['mask'] + weights['mask_bias']
                          for z in range(w)] for y in range(h)])
      e = np.exp(logits - logits.max())
      attention = e / e.sum()
      context = np.zeros(c)
      for y in range(h):
        for z in range(w):
          context += attention[y, z] * x[i, y, z]
    image = x[i].copy()
    if 'channel_mul' in fusion_types:
      term = _transform(context, weights['channel_mul'])
      image = image * (1.0 / (1.0 + np.exp(-term)))
    if 'channel_add' in fusion_types:
      image = image + _transform(context, weights['channel_add'])
    out[i] = image
  return out
