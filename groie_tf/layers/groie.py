"""GRoIE: the Generic RoI Extractor of Rossi, Karimi and Prati (ICPR 2020)."""

from typing import Mapping, Optional

import tensorflow as tf
import tf_keras

from groie_tf.layers._empty_batch import call_on_batch
from groie_tf.layers.generalized_attention import GeneralizedAttention
from groie_tf.layers.non_local import NonLocal2D
from groie_tf.ops import fpn_levels
from groie_tf.ops import roi_align

__all__ = ['GRoIE', 'LEVEL_SELECTIONS', 'AGGREGATIONS', 'MODULES']

LEVEL_SELECTIONS = ('all', 'heuristic', 'random')
AGGREGATIONS = ('sum', 'concat', 'sum+')
MODULES = ('none', 'conv1x1', 'conv3x3', 'conv5x5', 'non_local', 'attention')


def _conv_relu_initializer():
  # mmcv ConvModule: kaiming_init(mode='fan_out', nonlinearity='relu').
  return tf_keras.initializers.VarianceScaling(2.0, 'fan_out',
                                               'untruncated_normal')


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')


@tf_keras.utils.register_keras_serializable(package='groie_tf')
class GRoIE(tf_keras.layers.Layer):
  """Generic RoI Extractor: pools every RoI from every FPN level.

  From L. Rossi, A. Karimi, A. Prati, "A Novel Region of Interest Extraction
  Layer for Instance Segmentation", ICPR 2020 (arXiv:2004.13665). A drop-in
  replacement for Model Garden's `MultilevelROIAligner`, with the same call.

  For each RoI and each level l in `[min_level, max_level]`:

  1. RoIAlign (`groie_tf.ops.roi_align`, stride 2**l) pools a
     `crop_size x crop_size` map from the level;
  2. a pre-processing module transforms it;
  3. the L maps are aggregated: `sum` (in level order), `concat` along
     channels followed by a 1x1 conv + ReLU back to C channels, or `sum+`
     (sum followed by a 1x1 conv + ReLU);
  4. a post-processing module transforms the aggregate.

  The defaults are the paper's best configuration (Table V): a 5x5 conv +
  ReLU pre-processing whose weights are shared by all levels, sum, and
  GeneralizedAttention '0100' (6 heads, kv_stride 2) post-processing.

  Modules (`pre_processing`, `post_processing`): 'none'; 'conv1x1',
  'conv3x3', 'conv5x5' (C -> C conv with bias, zero 'same' padding, ReLU;
  He-normal fan_out initialisation); 'non_local' (`NonLocal2D`, reduction 2);
  'attention' (`GeneralizedAttention`, '0100', `attention_num_heads` heads,
  kv_stride 2).

  Pre-processing weights: mmdetection's `GenericRoIExtractor` applies one
  module to all levels (`share_pre_processing=True`, the default); the
  paper's text describes one module per level (`False`).

  Level selection: 'all' is GRoIE. 'heuristic' keeps only the level of the
  FPN rule (`groie_tf.ops.fpn_levels`: a `canonical_size` box goes to level
  4) and 'random' a uniformly drawn level per RoI, in training and
  inference alike (Table I's baseline and random rows). Both need `sum` or
  `sum+`, and pool (and pre-process) each RoI at its own level only, as
  detectron2's ROIPooler and mmdetection's SingleRoIExtractor do. The
  rule's 224 px suits COCO-sized inputs (800-1333 px); on smaller inputs it
  sends every RoI to the finest levels, and a `canonical_size` scaled with
  the input (56 px at 256 px) uses them all.

  Precision: RoIAlign runs in float32 whatever the policy; the modules and
  the aggregation run in the layer's compute dtype, which is also the output
  dtype (bfloat16 under `mixed_bfloat16`). Softmax runs in float32 for
  16-bit compute dtypes.

  Differences from mmdetection, on purpose: with `min_level == max_level`
  mmdetection skips the pre/post modules, this layer applies them; and
  mmdetection's concat has no reducing conv (its output has L*C channels),
  this layer reduces to C as the paper and the authors' code do, so that
  Model Garden's heads take the output unchanged.

  Example:

  >>> groie = GRoIE(crop_size=7)
  >>> features = {str(l): tf.zeros([2, 256 // 2**l, 256 // 2**l, 32])
  ...             for l in range(2, 7)}
  >>> boxes = tf.constant([[[10., 20., 90., 60.]] * 3] * 2)
  >>> groie(features, boxes).shape
  TensorShape([2, 3, 7, 7, 32])
  >>> groie(features, boxes[:, 0], box_indices=[1, 0]).shape  # flat RoIs
  TensorShape([2, 7, 7, 32])

  Args:
    crop_size: side S of the pooled RoI maps (7 for boxes, 14 for masks).
    min_level: finest pyramid level pooled (2 is P2, stride 4).
    max_level: coarsest level pooled; 5 by default, since the reference
      pools P2-P5 and ignores P6.
    sampling_ratio: RoIAlign samples per bin and axis (>= 1).
    aligned: RoIAlign's half-pixel convention (see `groie_tf.ops.roi_align`).
    level_selection: 'all', 'heuristic' or 'random'.
    canonical_size: the RoI side (input pixels) that the 'heuristic' rule
      puts on level 4; 224 as in FPN and mmdetection (whose `finest_scale`
      56 at P2 is the same rule). Only 'heuristic' uses it.
    aggregation: 'sum', 'concat' or 'sum+'.
    pre_processing: module applied to each level's pooled map.
    post_processing: module applied to the aggregate.
    share_pre_processing: one pre-processing module for all levels.
    attention_num_heads: heads of the 'attention' modules (6 in the paper;
      the authors' GC-Net box branch used 8).
    mmcv_compat: attention modules reproduce mmcv's transposed-query term,
      needed for weights converted from mmdetection checkpoints.
    roi_align_implementation: RoIAlign's forward pass and gradient:
      'auto' (the default: chosen per device, see `groie_tf.ops.roi_align`),
      'kernel', 'sparse', 'atomic' or 'gather'.
    seed: seed of the 'random' level selection.
    kernel_regularizer: regulariser of every kernel.
    **kwargs: standard Keras layer arguments.

  Call arguments:
    features: mapping from level strings ('2', '3', ...) to `[B, H_l, W_l, C]`
      maps with one channel count C; levels outside `[min_level, max_level]`
      are ignored.
    boxes: `[B, N, 4]` RoIs `[y1, x1, y2, x2]` in input-image pixels, N per
      image; or, with `box_indices`, `[K, 4]` RoIs from any images.
    training: unused; accepted for Model Garden's call convention.
    box_indices: None, or int `[K]`: the image of each of `[K, 4]` boxes
      (as `tf.image.crop_and_resize` takes them). For RoIs drawn from the
      whole batch, which would otherwise need a `[B, K, 4]` table whose
      padding rows the modules would process too.

  Returns:
    `[B, N, S, S, C]` RoI features in the layer's compute dtype; `[K, S, S,
    C]` with `box_indices`.
  """

  def __init__(self,
               crop_size: int = 7,
               min_level: int = 2,
               max_level: int = 5,
               sampling_ratio: int = 2,
               aligned: bool = True,
               level_selection: str = 'all',
               canonical_size: float = 224.0,
               aggregation: str = 'sum',
               pre_processing: str = 'conv5x5',
               post_processing: str = 'attention',
               share_pre_processing: bool = True,
               attention_num_heads: int = 6,
               mmcv_compat: bool = False,
               roi_align_implementation: str = 'auto',
               seed: Optional[int] = None,
               kernel_regularizer=None,
               **kwargs):
    super().__init__(**kwargs)
    roi_align.check_roi_align_arguments(crop_size, sampling_ratio,
                                        roi_align_implementation)
    if not (isinstance(min_level, int) and isinstance(max_level, int) and
            0 <= min_level <= max_level):
      raise ValueError('min_level and max_level must be ints with '
                       f'0 <= min_level <= max_level, got {min_level!r} and '
                       f'{max_level!r}.')
    _check_choice('level_selection', level_selection, LEVEL_SELECTIONS)
    _check_choice('aggregation', aggregation, AGGREGATIONS)
    if (isinstance(canonical_size, bool) or
        not isinstance(canonical_size, (int, float)) or
        not canonical_size > 0):
      raise ValueError('canonical_size must be a positive number of pixels, '
                       f'got {canonical_size!r}.')
    _check_choice('pre_processing', pre_processing, MODULES)
    _check_choice('post_processing', post_processing, MODULES)
    if level_selection != 'all' and aggregation == 'concat':
      raise ValueError(
          f"level_selection={level_selection!r} keeps one level per RoI, so "
          "there is nothing to concatenate: use aggregation 'sum' or 'sum+'.")
    if not isinstance(attention_num_heads, int) or attention_num_heads < 1:
      raise ValueError('attention_num_heads must be an int >= 1, got '
                       f'{attention_num_heads!r}.')
    self.crop_size = crop_size
    self.min_level = min_level
    self.max_level = max_level
    self.sampling_ratio = sampling_ratio
    self.aligned = aligned
    self.level_selection = level_selection
    self.canonical_size = float(canonical_size)
    self.aggregation = aggregation
    self.pre_processing = pre_processing
    self.post_processing = post_processing
    self.share_pre_processing = share_pre_processing
    self.attention_num_heads = attention_num_heads
    self.mmcv_compat = mmcv_compat
    self.roi_align_implementation = roi_align_implementation
    self.seed = seed
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self._levels = list(range(min_level, max_level + 1))

  def _check_features(self, shapes: Mapping[str, tf.TensorShape]) -> int:
    """Checks level keys and channels; returns the channel count C."""
    if not isinstance(shapes, Mapping):
      raise TypeError('GRoIE takes features as a mapping from level strings '
                      f'to [B, H, W, C] maps, got {type(shapes).__name__}.')
    missing = [str(l) for l in self._levels if str(l) not in shapes]
    if missing:
      raise ValueError(
          f'GRoIE pools levels {self.min_level}..{self.max_level} but the '
          f'features have no level {", ".join(missing)} (keys: '
          f'{sorted(shapes)}). Keys are level strings such as "2".')
    channels = {}
    for level in self._levels:
      shape = tf.TensorShape(shapes[str(level)])
      if shape.rank != 4 or shape[-1] is None:
        raise ValueError(f'Level {level} must be [B, H, W, C] with a static C, '
                         f'got {shape}.')
      channels[level] = shape[-1]
    if len(set(channels.values())) > 1:
      first = self._levels[0]
      odd = next(l for l in self._levels if channels[l] != channels[first])
      raise ValueError(
          f'All levels must have the same channel count: level {first} has '
          f'{channels[first]}, level {odd} has {channels[odd]} (all: '
          f'{channels}).')
    return channels[self._levels[0]]

  def _make_module(self, kind: str, channels: int, name: str):
    if kind == 'none':
      return None
    if kind.startswith('conv'):
      return self._conv_relu(channels, int(kind[len('conv')]), name)
    if kind == 'non_local':
      return NonLocal2D(reduction=2, use_scale=True, name=name,
                        kernel_regularizer=self.kernel_regularizer,
                        dtype=self.dtype_policy)
    return GeneralizedAttention(
        num_heads=self.attention_num_heads, attention_type='0100',
        kv_stride=2, spatial_range=-1, mmcv_compat=self.mmcv_compat,
        kernel_regularizer=self.kernel_regularizer, name=name,
        dtype=self.dtype_policy)

  def _conv_relu(self, channels, kernel_size, name):
    return tf_keras.layers.Conv2D(
        channels, kernel_size, padding='same', activation='relu',
        kernel_initializer=_conv_relu_initializer(),
        bias_initializer='zeros', kernel_regularizer=self.kernel_regularizer,
        name=name, dtype=self.dtype_policy)

  def build(self, input_shape):
    channels = self._check_features(input_shape)
    if self.share_pre_processing:
      self.pre_modules = [self._make_module(self.pre_processing, channels,
                                            'pre_processing')]
    else:
      self.pre_modules = [
          self._make_module(self.pre_processing, channels,
                            f'pre_processing_level_{level}')
          for level in self._levels]
    self.aggregation_conv = (self._conv_relu(channels, 1, 'aggregation_conv')
                             if self.aggregation != 'sum' else None)
    self.post_module = self._make_module(self.post_processing, channels,
                                         'post_processing')
    super().build(input_shape)

  @staticmethod
  def _apply(module, rois):
    """`module` (None: the identity) on `[K, S, S, C']` RoI maps, K possibly
    0 at run time (`_empty_batch`)."""
    return rois if module is None else call_on_batch(module, rois)

  def _chosen_levels(self, boxes):
    """int32 `[K]`: the index in `[0, L)` of the level each RoI keeps under
    'heuristic' or 'random'."""
    if self.level_selection == 'heuristic':
      return fpn_levels.fpn_levels(boxes, self.min_level, self.max_level,
                                   self.canonical_size) - self.min_level
    return tf.random.uniform(tf.shape(boxes)[:1], 0, len(self._levels),
                             tf.int32, seed=self.seed)

  def call(self, features, boxes, training=None, box_indices=None):
    del training  # No layer here behaves differently in training.
    channels = self._check_features({k: v.shape for k, v in features.items()})
    flat_boxes, box_indices, static_count, unflat = self._flat_boxes(
        boxes, box_indices)
    if static_count == 0:
      # Nothing to pool; like mmdetection, no module runs.
      return unflat(tf.zeros([0, self.crop_size, self.crop_size, channels],
                             self.compute_dtype))
    if self.level_selection != 'all':
      aggregate = self._selected_features(features, flat_boxes, box_indices)
    else:
      per_level = self._level_features(features, flat_boxes, box_indices)
      if self.aggregation == 'concat':
        aggregate = tf.concat(per_level, -1)  # [K, S, S, L*C]
      else:
        aggregate = per_level[0]
        for level_features in per_level[1:]:  # level order, as the reference
          aggregate = aggregate + level_features
    aggregate = self._apply(self.aggregation_conv, aggregate)
    aggregate = self._apply(self.post_module, aggregate)
    return unflat(aggregate)

  def _flat_boxes(self, boxes, box_indices):
    """`(boxes [K, 4], box_indices [K], static_count, unflat)` for either
    form of call.

    `static_count` is the static K of flat boxes, N of `[B, N, 4]` ones (or
    None): 0 means there is nothing to pool. `unflat` maps `[K, S, S, C']`
    RoI maps back to the caller's form: `[B, N, S, S, C']` for `[B, N, 4]`
    boxes, unchanged for flat ones.
    """
    boxes = tf.convert_to_tensor(boxes)
    if box_indices is not None:
      if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise ValueError('With box_indices, GRoIE takes boxes [K, 4], got '
                         f'{boxes.shape}.')
      return (boxes, roi_align.checked_box_indices(box_indices, boxes),
              boxes.shape[0], lambda t: t)
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
      raise ValueError(f'GRoIE takes boxes [B, N, 4] (or [K, 4] with '
                       f'box_indices), got {boxes.shape}.')
    batch = tf.shape(boxes)[0]
    num_boxes = (boxes.shape[1] if boxes.shape[1] is not None else
                 tf.shape(boxes)[1])
    size = self.crop_size

    def unflat(t):
      return tf.reshape(t, [batch, num_boxes, size, size, t.shape[-1]])

    return (tf.reshape(boxes, [-1, 4]), tf.repeat(tf.range(batch), num_boxes),
            boxes.shape[1], unflat)

  def _pool(self, features, level, boxes, box_indices):
    """RoIAlign of `boxes` `[K, 4]` from `level`: `[K, S, S, C]` in the
    compute dtype."""
    return tf.cast(
        roi_align.roi_align_flat(features[str(level)], boxes, box_indices,
                                 self.crop_size, 2**level,
                                 self.sampling_ratio, self.aligned,
                                 self.roi_align_implementation),
        self.compute_dtype)

  def _level_features(self, features, boxes, box_indices):
    """Every RoI from every level, pre-processed ('all'): L x `[K, S, S,
    C]`."""
    pooled = [self._pool(features, level, boxes, box_indices)
              for level in self._levels]
    if self.pre_processing == 'none':
      return pooled
    if self.share_pre_processing:
      # One module call over all levels: [L*K, S, S, C].
      stacked = self._apply(self.pre_modules[0], tf.concat(pooled, 0))
      return tf.split(stacked, len(self._levels))
    return [self._apply(module, p)
            for module, p in zip(self.pre_modules, pooled)]

  def _selected_features(self, features, boxes, box_indices, chosen=None):
    """Each RoI pooled from, and pre-processed at, its own level only
    ('heuristic', 'random'): `[K, S, S, C]`.

    The RoIs are partitioned by level (order kept within a level); each
    part, possibly empty, is pooled from its level (and, with one module
    per level, pre-processed by that level's module); the rows are put back
    in RoI order, and a shared module runs once on them all. The numbers of
    pooling every level and keeping one, for 1/L of the RoIAlign and module
    work. XLA compiles it too (the parts have sizes bounded by K), and there
    it measured 3x faster than pooling every level (CPU, 512 px, 2x64
    RoIs, forward+backward).

    Args:
      features, boxes, box_indices: as for `_level_features`.
      chosen: int32 `[K]` level indices in `[0, L)`; None draws them
        (`_chosen_levels`).
    """
    if chosen is None:
      chosen = self._chosen_levels(boxes)
    per_level = (self.pre_processing != 'none' and
                 not self.share_pre_processing)
    rows = tf.dynamic_partition(tf.range(tf.shape(boxes)[0]), chosen,
                                len(self._levels))  # L x [K_l]
    parts = []
    for i, (level, where) in enumerate(zip(self._levels, rows)):
      part = self._pool(features, level, tf.gather(boxes, where),
                        tf.gather(box_indices, where))
      if per_level:
        part = self._apply(self.pre_modules[i], part)
      parts.append(part)
    # Each RoI's row back in place. The gradient of a stitch is a gather of
    # each part (dense); a gather of the concatenated parts measured 20 ms
    # slower forward+backward (2x64 RoIs at 1024 px): its gradient is
    # IndexedSlices, split again by the concat's gradient.
    selected = tf.dynamic_stitch(rows, parts)
    selected.set_shape(boxes.shape[:1].concatenate(parts[0].shape[1:]))
    if self.pre_processing != 'none' and self.share_pre_processing:
      selected = self._apply(self.pre_modules[0], selected)
    return selected

  def level_features(self, features, boxes):
    """What the aggregation combines: each level pooled and pre-processed.

    Args:
      features: {str(level): [B, H_l, W_l, C]}, as for `call`.
      boxes: [B, N, 4] with N > 0.

    Returns:
      A list over levels `min_level..max_level` of [B, N, S, S, C] in the
      compute dtype, zero for a level that `level_selection` leaves out.
      Their sum is the aggregated feature for 'sum' and 'sum+'.
    """
    self._check_features({k: v.shape for k, v in features.items()})
    flat_boxes, box_indices, _, unflat = self._flat_boxes(boxes, None)
    if self.level_selection == 'all':
      per_level = self._level_features(features, flat_boxes, box_indices)
    else:
      chosen = self._chosen_levels(flat_boxes)
      selected = self._selected_features(features, flat_boxes, box_indices,
                                         chosen)
      per_level = [
          tf.reshape(tf.cast(tf.equal(chosen, i), selected.dtype),
                     [-1, 1, 1, 1]) * selected
          for i in range(len(self._levels))]
    return [unflat(t) for t in per_level]

  def get_config(self):
    config = super().get_config()
    config.update({
        'crop_size': self.crop_size,
        'min_level': self.min_level,
        'max_level': self.max_level,
        'sampling_ratio': self.sampling_ratio,
        'aligned': self.aligned,
        'level_selection': self.level_selection,
        'canonical_size': self.canonical_size,
        'aggregation': self.aggregation,
        'pre_processing': self.pre_processing,
        'post_processing': self.post_processing,
        'share_pre_processing': self.share_pre_processing,
        'attention_num_heads': self.attention_num_heads,
        'mmcv_compat': self.mmcv_compat,
        'roi_align_implementation': self.roi_align_implementation,
        'seed': self.seed,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer),
    })
    return config
