"""The GRoIE authors' published mmdetection checkpoints, and how each is
recognised and configured here.

mmdetection's `configs/groie/README.md` links nine COCO models (four with
GRoIE, five baselines). A checkpoint is recognised by its weights: the
state-dict keys say which detector it is (a mask head, a grid head, GC
blocks, GRoIE modules, ResNet depth), so a renamed file still converts. A
config name, from the checkpoint's `meta` or the converter's `--config`,
is checked against what the weights say.

Each model's config here is the row of `configs/paper/` in the mmdetection
layout (`base_1x_8gpu.yaml`, the row, `mmdetection_layout.yaml`), with what
the published weights fix: mmcv's attention arithmetic
(`mmcv_compat: true`), the attention head counts of mmdetection's GRoIE
configs (6 and 6), and COCO's 91 category ids.
"""

import dataclasses
import re
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from groie_tf.errors import CheckpointError

DOWNLOAD_ROOT = 'https://download.openmmlab.com/mmdetection/v2.0/'


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What a state dict's keys say about its detector."""
  depth: int  # ResNet-50 or 101
  gc: bool  # GC blocks in c3-c5
  mask: bool  # a mask branch
  grid: bool  # Grid R-CNN's grid branch
  groie: bool  # GRoIE extractors (else mmdetection's SingleRoIExtractor)


@dataclasses.dataclass(frozen=True)
class PublishedModel:
  """One published checkpoint."""
  names: Tuple[str, ...]  # mmdetection's config names, 3.x first, then 2.x
  architecture: Architecture
  row: str  # configs/paper/<row>.yaml
  experiment: str  # the row's registered experiment
  download: str  # under DOWNLOAD_ROOT
  box_ap: Optional[float]  # the authors' README (COCO val2017)
  mask_ap: Optional[float] = None

  @property
  def name(self) -> str:
    return self.names[0]


def _model(names, depth, gc, mask, grid, groie, row, experiment, download,
           box_ap, mask_ap=None) -> PublishedModel:
  return PublishedModel(tuple(names), Architecture(depth, gc, mask, grid,
                                                   groie),
                        row, experiment, download, box_ap, mask_ap)


PUBLISHED = (
    _model(('faster-rcnn_r50_fpn_1x_coco', 'faster_rcnn_r50_fpn_1x_coco'),
           50, False, False, False, False, 'table5_faster_rcnn_baseline',
           'groie_fasterrcnn_resnetfpn_coco',
           'faster_rcnn/faster_rcnn_r50_fpn_1x_coco/'
           'faster_rcnn_r50_fpn_1x_coco_20200130-047c8118.pth', 37.4),
    _model(('faste-rcnn_r50_fpn_groie_1x_coco',  # sic, mmdetection 3.x
            'faster-rcnn_r50_fpn_groie_1x_coco',
            'faster_rcnn_r50_fpn_groie_1x_coco'),
           50, False, False, False, True, 'table5_faster_rcnn_groie',
           'groie_fasterrcnn_resnetfpn_coco',
           'groie/faster_rcnn_r50_fpn_groie_1x_coco/'
           'faster_rcnn_r50_fpn_groie_1x_coco_20200604_211715-66ee9516.pth',
           38.3),
    _model(('grid-rcnn_r50_fpn_gn-head_1x_coco',
            'grid_rcnn_r50_fpn_gn-head_1x_coco'),
           50, False, False, True, False, 'table5_grid_rcnn_baseline',
           'gridrcnn_resnetfpn_coco',
           'groie/grid_rcnn_r50_fpn_gn-head_1x_coco/'
           'grid_rcnn_r50_fpn_gn-head_1x_coco_20200605_202059-64f00ee8.pth',
           39.1),
    _model(('mask-rcnn_r50_fpn_1x_coco', 'mask_rcnn_r50_fpn_1x_coco'),
           50, False, True, False, False, 'table5_mask_rcnn_baseline',
           'groie_maskrcnn_resnetfpn_coco',
           'mask_rcnn/mask_rcnn_r50_fpn_1x_coco/'
           'mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth', 38.2, 34.7),
    _model(('mask-rcnn_r50_fpn_groie_1x_coco',
            'mask_rcnn_r50_fpn_groie_1x_coco'),
           50, False, True, False, True, 'table5_mask_rcnn_groie',
           'groie_maskrcnn_resnetfpn_coco',
           'groie/mask_rcnn_r50_fpn_groie_1x_coco/'
           'mask_rcnn_r50_fpn_groie_1x_coco_20200604_211715-50d90c74.pth',
           39.0, 36.0),
    _model(('mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco',
            'mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco'),
           50, True, True, False, False, 'table5_gcnet_baseline',
           'gcnet_maskrcnn_resnetfpn_coco',
           'gcnet/mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco/'
           'mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco_20200202-'
           '50b90e5c.pth', 40.7, 36.5),
    _model(('mask-rcnn_r50_fpn_syncbn-r4-gcb-c3-c5-groie_1x_coco',
            'mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_coco'),
           50, True, True, False, True, 'table5_gcnet_groie',
           'groie_gcnet_maskrcnn_resnetfpn_coco',
           'groie/mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_coco'
           '/mask_rcnn_r50_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_coco_'
           '20200604_211715-42eb79e1.pth', 41.0, 37.8),
    _model(('mask-rcnn_r101-syncbn-gcb-r4-c3-c5_fpn_1x_coco',
            'mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco'),
           101, True, True, False, False, 'table5_gcnet_r101_baseline',
           'gcnet_maskrcnn_resnetfpn_coco',
           'gcnet/mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco/'
           'mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_1x_coco_20200206-'
           '8407a3f0.pth', 42.2, 37.8),
    _model(('mask-rcnn_r101_fpn_syncbn-r4-gcb_c3-c5-groie_1x_coco',
            'mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_coco'),
           101, True, True, False, True, 'table5_gcnet_r101_groie',
           'groie_gcnet_maskrcnn_resnetfpn_coco',
           'groie/mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_'
           'coco/mask_rcnn_r101_fpn_syncbn-backbone_r4_gcb_c3-c5_groie_1x_coco'
           '_20200607_224507-8daae01c.pth', 42.6, 38.7),
)

# mmdetection's GRoIE configs give both extractors' attention 6 heads.
ATTENTION_HEADS = 6

# COCO's 80 category ids, in mmdetection's class order (sorted by id).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)
# Their names, as mmdetection's CocoDataset lists them.
COCO_CLASS_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')
COCO_NUM_CLASSES = 91  # Model Garden's: category ids 1..90, 0 the background


def architecture(keys: Sequence[str]) -> Architecture:
  """The detector a state dict's keys describe."""
  keys = set(keys)
  blocks = {int(m.group(1)) for k in keys
            for m in [re.match(r'backbone\.layer3\.(\d+)\.', k)] if m}
  depths = {6: 50, 23: 101}
  if len(blocks) not in depths:
    raise CheckpointError(
        f'the checkpoint\'s backbone has {len(blocks)} blocks in layer3: '
        'not a ResNet-50 (6) or ResNet-101 (23) of mmdetection.')
  return Architecture(
      depth=depths[len(blocks)],
      gc=any('.context_block.' in k for k in keys),
      mask=any(k.startswith('roi_head.mask_head.') for k in keys),
      grid=any(k.startswith('roi_head.grid_head.') for k in keys),
      groie=any(k.startswith('roi_head.bbox_roi_extractor.') for k in keys))


def _normalised(name: str) -> str:
  """A config name without folders or `.py`."""
  return re.sub(r'\.py$', '', name.strip().replace('\\', '/').split('/')[-1])


def by_config_name(name: str) -> PublishedModel:
  """The published model of mmdetection config `name` (3.x or 2.x)."""
  wanted = _normalised(name)
  for model in PUBLISHED:
    if wanted in model.names:
      return model
  raise CheckpointError(
      f'unknown config {name!r}: the published GRoIE models are '
      f'{", ".join(m.name for m in PUBLISHED)} (or their mmdetection 2.x '
      'names).')


def config_name_in_meta(meta: Mapping) -> Optional[str]:
  """The config a checkpoint's `meta` names, if any.

  mmdetection 2.x wrote the config's text (`meta['config']`) and, in later
  versions, its file name (`meta['exp_name']`); mmengine (3.x) writes
  `meta['cfg']` (text) and `meta['experiment_name']`. A text names its file
  only in comments, so names are looked for, texts are not parsed.
  """
  for key in ('exp_name', 'experiment_name'):
    value = meta.get(key)
    if isinstance(value, str) and value:
      # mmengine: '<config>_<yyyymmdd_hhmmss>'.
      return re.sub(r'_\d{8}_\d{6}$', '', _normalised(value))
  return None


def recognise(state_dict_keys: Sequence[str], meta: Mapping,
              config: Optional[str] = None) -> PublishedModel:
  """The published model a checkpoint holds.

  Args:
    state_dict_keys: the checkpoint's state-dict keys.
    meta: its `meta` ({} for a `.npz`).
    config: a config name the user gave; else the one `meta` names, if any.

  Raises:
    CheckpointError: an unknown config name, weights of none of the
      published detectors, or weights and config name that disagree.
  """
  found = architecture(state_dict_keys)
  name = config or config_name_in_meta(meta)
  if name is not None:
    model = by_config_name(name)
    if model.architecture != found:
      raise CheckpointError(
          f'config {name!r} is {_describe(model.architecture)}, but the '
          f'checkpoint\'s weights are {_describe(found)}.')
    return model
  for model in PUBLISHED:
    if model.architecture == found:
      return model
  raise CheckpointError(
      f'the checkpoint\'s weights are {_describe(found)}: none of the '
      f'published GRoIE models ({", ".join(m.name for m in PUBLISHED)}).')


def _describe(arch: Architecture) -> str:
  detector = ('Grid R-CNN' if arch.grid else
              'Mask R-CNN' if arch.mask else 'Faster R-CNN')
  return (f'a {detector} on a {"GC " if arch.gc else ""}ResNet-{arch.depth}'
          f' {"with" if arch.groie else "without"} GRoIE')


def class_names(meta: Mapping) -> Optional[Tuple[str, ...]]:
  """The class names `meta` records (2.x `CLASSES`, 3.x
  `dataset_meta['classes']`), if any."""
  names = meta.get('CLASSES')
  if names is None and isinstance(meta.get('dataset_meta'), Mapping):
    names = meta['dataset_meta'].get('classes')
  return None if names is None else tuple(str(n) for n in names)


def attention_heads(query_conv: np.ndarray) -> Tuple[int, ...]:
  """The head counts a GeneralizedAttention's query_conv weight
  `[outputs, in_channels, 1, 1]` allows.

  mmcv gives each of `h` heads `in_channels // h` channels, so the conv
  has `h * (in_channels // h)` outputs: the shape fits every such `h` (252
  outputs of 256 channels: 6, 7, 9, 12, ... heads), not always one.
  """
  outputs, in_channels = query_conv.shape[:2]
  return tuple(h for h in range(1, in_channels + 1)
               if h * (in_channels // h) == outputs)


def class_columns(num_classes: int) -> Tuple[Optional[Sequence[int]], int]:
  """(the model column of each checkpoint class, the model's class count):
  COCO's category ids for a COCO model's 80 classes, else i + 1."""
  if num_classes == len(COCO_CATEGORY_IDS):
    return COCO_CATEGORY_IDS, COCO_NUM_CLASSES
  return None, num_classes + 1
