"""Run mmdetection 3.3.0 on mmcv-lite 2.1.0, which has no compiled ops.

``install()`` must run before anything imports ``mmcv.ops`` (and so before
``mmdet.models``).  It does three things:

1. registers a stand-in module under the name ``mmcv._ext``: every public
   attribute is a function that raises when called (so ``load_ext``'s
   ``hasattr`` checks pass and mmcv's op modules import), every private
   attribute raises AttributeError (``inspect`` and friends probe those);
2. makes every ``mmcv.ops.RoIAlign`` use ``torchvision.ops.roi_align``
   (mmcv's own ``use_torchvision`` switch, forced on for every instance).
   mmcv passes ``aligned`` through, and torchvision's CPU kernel is the same
   Detectron2 kernel as mmcv's: ``-0.5`` offset when aligned, no minimum RoI
   size when aligned, adaptive ``ceil(roi_size / output_size)`` samples per
   bin when ``sampling_ratio <= 0``, the same bilinear rule and the same
   ``count = max(grid_h * grid_w, 1)``.  Only average pooling exists there,
   so ``pool_mode='max'`` is refused;
3. replaces ``NMSop.forward`` (module ``sys.modules['mmcv.ops.nms']``; the
   attribute ``mmcv.ops.nms`` is the function) by ``torchvision.ops.nms``.
   Both CPU kernels sort by score (``scores.sort(descending=True)``), compute
   the IoU in the boxes' dtype with areas ``(x2-x1)*(y2-y1)`` (mmcv's
   ``offset`` is 0 everywhere in mmdet's configs; 1 is refused) and suppress
   when ``IoU > threshold``.  mmcv compares against a float32 threshold,
   torchvision against a double, so the threshold is rounded to float32
   first; then the comparison is the same.
"""
import sys
import types

import numpy as np

_INSTALLED = False


class _MissingExt(types.ModuleType):
    """Stand-in for the compiled ``mmcv._ext``."""

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)

        def _missing(*args, **kwargs):
            raise NotImplementedError(
                f'mmcv._ext.{name} is not available: mmcv-lite has no '
                'compiled ops (see tools/mmdet_reference/mmcv_shim.py)')

        _missing.__name__ = name
        return _missing


def install():
    """Install the stand-ins (idempotent). Returns the mmcv.ops module."""
    global _INSTALLED
    if _INSTALLED:
        return sys.modules['mmcv.ops']
    if 'mmcv.ops' in sys.modules:
        raise RuntimeError('mmcv_shim.install() must run before mmcv.ops '
                           'is imported')
    import mmcv  # noqa: F401
    import torch
    import torchvision

    ext = _MissingExt('mmcv._ext')
    ext.__file__ = __file__
    sys.modules['mmcv._ext'] = ext
    mmcv._ext = ext

    import mmcv.ops  # noqa: F401  (imports every op module against the stub)
    roi_align_mod = sys.modules['mmcv.ops.roi_align']
    nms_mod = sys.modules['mmcv.ops.nms']

    # 2. RoIAlign -> torchvision, on every instance.
    cls = roi_align_mod.RoIAlign
    orig_init = cls.__init__

    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        if self.pool_mode != 'avg':
            raise NotImplementedError(
                "torchvision's roi_align only averages (pool_mode='avg')")
        self.use_torchvision = True

    cls.__init__ = __init__

    # 3. NMSop -> torchvision.ops.nms, with mmcv's score filter and max_num.
    def nms_forward(ctx, bboxes, scores, iou_threshold, offset,
                    score_threshold, max_num):
        if offset != 0:
            raise NotImplementedError('torchvision nms has no offset=1 mode')
        is_filtering_by_score = score_threshold > 0
        if is_filtering_by_score:
            valid_mask = scores > score_threshold
            bboxes, scores = bboxes[valid_mask], scores[valid_mask]
            valid_inds = torch.nonzero(
                valid_mask, as_tuple=False).squeeze(dim=1)
        # mmcv's kernel takes `float iou_threshold`: round to float32.
        thr = float(np.float32(iou_threshold))
        inds = torchvision.ops.nms(bboxes, scores, thr)
        if max_num > 0:
            inds = inds[:max_num]
        if is_filtering_by_score:
            inds = valid_inds[inds]
        return inds

    nms_mod.NMSop.forward = staticmethod(nms_forward)
    _INSTALLED = True
    return mmcv.ops
