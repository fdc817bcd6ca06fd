"""GeneralizedAttention: the spatial attention block of Zhu et al. (2019)."""

import math

import numpy as np
import tensorflow as tf
import tf_keras

from groie_tf.layers._empty_batch import pointwise

__all__ = ['GeneralizedAttention']


def _fan_in_uniform():
  # mmcv's kaiming_init(mode='fan_in', a=1, distribution='uniform'): gain 1.
  return tf_keras.initializers.VarianceScaling(1.0, 'fan_in', 'uniform')


def fresh_initializer(initializer):
  """A new instance of `initializer`.

  tf_keras returns the same values from every call of one unseeded
  initializer instance, so sublayers sharing an instance would start equal.
  """
  return initializer.__class__.from_config(initializer.get_config())


def softmax_dtype(compute_dtype):
  """Softmax runs in float32 for 16-bit compute: exp overflows float16 above
  11, and bfloat16 sums lose the small weights. Wider dtypes stay as they are.
  """
  return tf.float32 if tf.as_dtype(compute_dtype).size < 4 else compute_dtype


def _upsampling_matrix(out_len: int, in_len: int) -> np.ndarray:
  """`[out_len, in_len]` bilinear interpolation with half-pixel centres.

  The rule of `F.interpolate(mode='bilinear', align_corners=False)` (and of
  `tf.image.resize`): output pixel i reads input coordinate
  `(i + 0.5) * in_len / out_len - 0.5`, clamped to the map. A matrix keeps
  the upsampling exact in float64 and compilable by XLA.
  """
  matrix = np.zeros((out_len, in_len))
  for i in range(out_len):
    source = max((i + 0.5) * in_len / out_len - 0.5, 0.0)
    low = min(int(source), in_len - 1)
    high = min(low + 1, in_len - 1)
    frac = source - low
    matrix[i, low] += 1.0 - frac
    matrix[i, high] += frac
  return matrix


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class GeneralizedAttention(tf_keras.layers.Layer):
  """Generalized spatial attention with four selectable terms.

  From X. Zhu, D. Cheng, Z. Zhang, S. Lin, J. Dai, "An Empirical Study of
  Spatial Attention Mechanisms in Deep Networks", ICCV 2019, as implemented
  in mmcv's `GeneralizedAttention`, whose weights and numerics this layer
  mirrors. GRoIE's post-processing uses `attention_type='0100'` with 6 heads
  and `kv_stride=2`.

  Per head, the logit between query position q and key position k is the
  sum of the terms selected by `attention_type` (string index 0..3):

  * '1000' query content x key content: `z_q . x_k`;
  * '0100' query content x relative position: `z_q . R_qk`;
  * '0010' key content alone: `u . x_k`;
  * '0001' relative position alone: `v . R_qk`;

  where `z` and `x` are 1x1 projections of the query and key maps, `u` and
  `v` learnt vectors, and `R_qk = (Rx + Ry) / sqrt(2)` a learnt projection of
  sinusoidal embeddings of the row and column offsets. There is no 1/sqrt(d)
  temperature. A softmax over the key positions weights a 1x1 projection of
  the values, a 1x1 `proj_conv` maps back to C channels, and the block
  returns `x + gamma * out` with `gamma` initialised to 0, so it starts as
  the identity.

  Keys and values are read at every `kv_stride`-th pixel (`x[:, ::s, ::s]`),
  queries at every `q_stride`-th pixel; with `q_stride > 1` the output is
  upsampled bilinearly (half-pixel centres) back to the input size.

  `mmcv_compat=True` reproduces one mmcv quirk: whenever '0100' is selected
  without '0001', mmcv computes the row term from the query at the
  transposed pixel, `z_(x, y) . Ry`, instead of `z_(y, x) . Ry`; on
  non-square maps it fails with a shape error (mmdetection issue #8179), and
  the fix proposed in mmcv PR #2742 was closed unmerged. Every published
  GRoIE checkpoint was trained with it, so converted weights need it; like
  mmcv, it only runs on square query maps.
  The default (False) computes the formula of the paper.

  Example:

  >>> block = GeneralizedAttention(num_heads=6, attention_type='0100')
  >>> block(tf.zeros([2, 7, 7, 256])).shape
  TensorShape([2, 7, 7, 256])

  Args:
    num_heads: number of heads; each has `C // num_heads` channels (mmcv
      drops the remainder, so 256 channels and 6 heads project to 252).
    attention_type: four '0'/'1' characters selecting the terms above.
    kv_stride: subsampling stride of the key/value map.
    q_stride: subsampling stride of the query map.
    position_embedding_dim: size of the sinusoidal embedding of one axis
      offset pair, a multiple of 4; -1 means the input channel count.
    position_magnitude: multiplier on the coordinate offsets.
    spatial_range: -1 for global attention; r >= 0 restricts each query to
      the keys of mmcv's window of +-r pixels around it.
    mmcv_compat: reproduce mmcv's transposed-query row term (see above).
    kernel_initializer: initialiser of the projections (mmcv's default).
    kernel_regularizer: regulariser of the projection kernels.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    inputs: `[N, H, W, C]` feature maps.

  Returns:
    `[N, H, W, C]`, in the layer's compute dtype.
  """

  def __init__(self,
               num_heads: int = 9,
               attention_type: str = '1111',
               kv_stride: int = 2,
               q_stride: int = 1,
               position_embedding_dim: int = -1,
               position_magnitude: float = 1,
               spatial_range: int = -1,
               mmcv_compat: bool = False,
               kernel_initializer=None,
               kernel_regularizer=None,
               **kwargs):
    super().__init__(**kwargs)
    if (not isinstance(attention_type, str) or len(attention_type) != 4 or
        set(attention_type) - {'0', '1'} or '1' not in attention_type):
      raise ValueError(
          "attention_type must be four '0'/'1' characters with at least one "
          f"'1' (e.g. '0100'), got {attention_type!r}.")
    for name, value in [('num_heads', num_heads), ('kv_stride', kv_stride),
                        ('q_stride', q_stride)]:
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}.')
    if position_embedding_dim != -1 and (position_embedding_dim <= 0 or
                                         position_embedding_dim % 4):
      raise ValueError('position_embedding_dim must be -1 or a positive '
                       f'multiple of 4, got {position_embedding_dim!r}.')
    if not isinstance(spatial_range, int) or spatial_range < -1:
      raise ValueError(
          f'spatial_range must be -1 or an int >= 0, got {spatial_range!r}.')
    self.num_heads = num_heads
    self.attention_type = attention_type
    self.kv_stride = kv_stride
    self.q_stride = q_stride
    self.position_embedding_dim = position_embedding_dim
    self.position_magnitude = position_magnitude
    self.spatial_range = spatial_range
    self.mmcv_compat = mmcv_compat
    self.kernel_initializer = tf_keras.initializers.get(
        kernel_initializer or _fan_in_uniform())
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self._terms = [bit == '1' for bit in attention_type]

  def _projection(self, filters, name, use_bias=False):
    return pointwise(
        filters, name, use_bias=use_bias, dtype=self.dtype_policy,
        kernel_initializer=fresh_initializer(self.kernel_initializer),
        kernel_regularizer=self.kernel_regularizer)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels is None:
      raise ValueError('GeneralizedAttention needs a static channel count.')
    if channels < self.num_heads:
      raise ValueError(f'num_heads ({self.num_heads}) exceeds the channel '
                       f'count ({channels}).')
    self._head_dim = channels // self.num_heads
    self._embed_dim = (channels if self.position_embedding_dim == -1 else
                       self.position_embedding_dim)
    if self._embed_dim % 4:
      raise ValueError('position_embedding_dim=-1 uses the channel count, '
                       f'which must be a multiple of 4; got {channels}.')
    inner = self._head_dim * self.num_heads
    appr_query, appr_pos, bias_appr, bias_pos = self._terms
    self.query_conv = (self._projection(inner, 'query_conv')
                       if appr_query or appr_pos else None)
    self.key_conv = (self._projection(inner, 'key_conv')
                     if appr_query or bias_appr else None)
    self.value_conv = self._projection(inner, 'value_conv')
    self.proj_conv = self._projection(channels, 'proj_conv', use_bias=True)
    if appr_pos or bias_pos:
      self.appr_geom_fc_x = tf_keras.layers.Dense(
          inner, use_bias=False, name='appr_geom_fc_x',
          dtype=self.dtype_policy,
          kernel_initializer=fresh_initializer(self.kernel_initializer),
          kernel_regularizer=self.kernel_regularizer)
      self.appr_geom_fc_y = tf_keras.layers.Dense(
          inner, use_bias=False, name='appr_geom_fc_y',
          dtype=self.dtype_policy,
          kernel_initializer=fresh_initializer(self.kernel_initializer),
          kernel_regularizer=self.kernel_regularizer)
    else:
      self.appr_geom_fc_x = self.appr_geom_fc_y = None
    bias_bound = 1.0 / math.sqrt(2 * self._head_dim)
    bias_init = tf_keras.initializers.RandomUniform(-bias_bound, bias_bound)
    self.appr_bias = (self.add_weight(
        'appr_bias', [inner], initializer=fresh_initializer(bias_init))
                      if bias_appr else None)
    self.geom_bias = (self.add_weight(
        'geom_bias', [inner], initializer=fresh_initializer(bias_init))
                      if bias_pos else None)
    self.gamma = self.add_weight('gamma', [1], initializer='zeros')
    super().build(input_shape)

  def _relative_position_features(self, q_len, kv_len, fc, dtype):
    """`[q_len, kv_len, heads, d]` projected embeddings of one axis, / sqrt(2).

    Offsets are exact integers, so the embedding is computed in numpy float64
    and rounded once to the compute precision.
    """
    offsets = (np.arange(q_len)[:, None] * self.q_stride -
               np.arange(kv_len)[None, :] * self.kv_stride)
    offsets = offsets * float(self.position_magnitude)  # [q, kv]
    quarter = self._embed_dim // 4
    wavelengths = 1000.0**((4.0 / self._embed_dim) * np.arange(quarter))
    phase = offsets[:, :, None] / wavelengths  # [q, kv, D/4]
    embedding = np.concatenate([np.sin(phase), np.cos(phase)], -1)
    features = fc(tf.constant(embedding, dtype))  # [q, kv, heads * d]
    features = tf.reshape(features,
                          [q_len, kv_len, self.num_heads, self._head_dim])
    return features / math.sqrt(2.0)

  def _split_heads(self, x):
    """`[N, H, W, heads * d]` -> `[N, H, W, heads, d]` (head-major split)."""
    shape = tf.shape(x)
    return tf.reshape(
        x, [shape[0], shape[1], shape[2], self.num_heads, self._head_dim])

  def _local_window_mask(self, h, w, h_kv, w_kv):
    """`[h*w, h_kv*w_kv]` bool: mmcv's window of keys each query may see."""
    def axis_mask(q_len, kv_len):
      q = np.arange(q_len)[:, None]
      kv = np.arange(kv_len)[None, :]
      low = np.maximum((q - self.spatial_range) // self.kv_stride, 0)
      high = (q + self.spatial_range + 1) // self.kv_stride + 1
      return (kv >= low) & (kv < high)  # [q, kv]
    rows, cols = axis_mask(h, h_kv), axis_mask(w, w_kv)
    mask = rows[:, None, :, None] & cols[None, :, None, :]
    return mask.reshape(h * w, h_kv * w_kv)

  def call(self, inputs):
    appr_query, appr_pos, bias_appr, bias_pos = self._terms
    dtype = self.compute_dtype
    x_q = inputs[:, ::self.q_stride, ::self.q_stride, :]
    x_kv = inputs[:, ::self.kv_stride, ::self.kv_stride, :]
    h, w = x_q.shape[1], x_q.shape[2]
    h_kv, w_kv = x_kv.shape[1], x_kv.shape[2]
    if None in (h, w):
      raise ValueError('GeneralizedAttention needs static spatial sizes, '
                       f'got {inputs.shape}.')
    batch = tf.shape(inputs)[0]

    logits = tf.zeros([1, self.num_heads, 1, 1, 1, 1], dtype)
    # Broadcast layout of every term: [N, heads, h, w, h_kv, w_kv].
    if appr_query or bias_appr:
      keys = self._split_heads(self.key_conv(x_kv))  # [N, hk, wk, heads, d]
    if appr_query or appr_pos:
      queries = self._split_heads(self.query_conv(x_q))  # [N, h, w, heads, d]
    if appr_query:
      content = queries
      if bias_appr:
        content = content + tf.reshape(self.appr_bias,
                                       [self.num_heads, self._head_dim])
      logits += tf.einsum('nyxhd,nabhd->nhyxab', content, keys)
    elif bias_appr:
      u = tf.reshape(self.appr_bias, [self.num_heads, self._head_dim])
      logits += tf.einsum('hd,nabhd->nhab', u, keys)[:, :, None, None]
    if appr_pos or bias_pos:
      rel_x = self._relative_position_features(w, w_kv, self.appr_geom_fc_x,
                                               dtype)  # [w, wk, heads, d]
      rel_y = self._relative_position_features(h, h_kv, self.appr_geom_fc_y,
                                               dtype)  # [h, hk, heads, d]
    if appr_pos:
      query_x = queries
      if bias_pos:
        query_x = query_x + tf.reshape(self.geom_bias,
                                       [self.num_heads, self._head_dim])
      query_y = query_x
      if self.mmcv_compat and not bias_pos:
        if h != w:
          raise ValueError(
              'mmcv_compat=True reproduces mmcv\'s transposed-query row term '
              "of attention_type '0100', which mmcv only computes on square "
              f'query maps; got {h}x{w}.')
        query_y = tf.transpose(query_x, [0, 2, 1, 3, 4])
      logits += tf.einsum('nyxhd,xbhd->nhyxb', query_x, rel_x)[:, :, :, :,
                                                                None, :]
      logits += tf.einsum('nyxhd,yahd->nhyxa', query_y, rel_y)[..., None]
    elif bias_pos:
      v = tf.reshape(self.geom_bias, [self.num_heads, self._head_dim])
      term_x = tf.einsum('hd,xbhd->hxb', v, rel_x)  # [heads, w, wk]
      term_y = tf.einsum('hd,yahd->hya', v, rel_y)  # [heads, h, hk]
      logits += (term_x[None, :, None, :, None, :] +
                 term_y[None, :, :, None, :, None])

    logits = tf.broadcast_to(
        logits, [batch, self.num_heads, h, w, h_kv, w_kv])
    logits = tf.reshape(logits, [batch, self.num_heads, h * w, h_kv * w_kv])
    logits = tf.cast(logits, softmax_dtype(dtype))
    if self.spatial_range >= 0:
      mask = self._local_window_mask(h, w, h_kv, w_kv)
      if self.mmcv_compat and self.attention_type == '0010':
        # mmcv's key-only fast path computes one query row and masks it with
        # the window of query (0, 0), then broadcasts it to every query.
        mask = np.broadcast_to(mask[:1], mask.shape)
      logits = tf.where(tf.constant(mask), logits, -np.inf)
    attention = tf.cast(tf.nn.softmax(logits, axis=-1), dtype)

    values = tf.reshape(self._split_heads(self.value_conv(x_kv)),
                        [batch, h_kv * w_kv, self.num_heads, self._head_dim])
    out = tf.einsum('nhqk,nkhd->nqhd', attention, values)
    out = tf.reshape(out, [batch, h, w, self.num_heads * self._head_dim])
    out = self.proj_conv(out)  # [N, h, w, C]
    if self.q_stride > 1:
      rows = tf.constant(_upsampling_matrix(inputs.shape[1], h), dtype)
      cols = tf.constant(_upsampling_matrix(inputs.shape[2], w), dtype)
      out = tf.einsum('Yy,nyxc,Xx->nYXc', rows, out, cols)
    return inputs + tf.cast(self.gamma, dtype) * out

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        'num_heads': self.num_heads,
        'attention_type': self.attention_type,
        'kv_stride': self.kv_stride,
        'q_stride': self.q_stride,
        'position_embedding_dim': self.position_embedding_dim,
        'position_magnitude': self.position_magnitude,
        'spatial_range': self.spatial_range,
        'mmcv_compat': self.mmcv_compat,
        'kernel_initializer': tf_keras.initializers.serialize(
            self.kernel_initializer),
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config
