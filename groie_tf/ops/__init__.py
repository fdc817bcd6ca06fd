"""Functional ops: RoIAlign and the FPN level heuristic."""

from groie_tf.ops.fpn_levels import fpn_levels
from groie_tf.ops.roi_align import check_roi_align_arguments
from groie_tf.ops.roi_align import checked_box_indices
from groie_tf.ops.roi_align import IMPLEMENTATIONS
from groie_tf.ops.roi_align import roi_align
from groie_tf.ops.roi_align import roi_align_flat

__all__ = ['roi_align', 'roi_align_flat', 'fpn_levels',
           'check_roi_align_arguments', 'checked_box_indices',
           'IMPLEMENTATIONS']
