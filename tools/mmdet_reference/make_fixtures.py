"""Generate mmdetection 3.3.0 reference fixtures for groie-tf's parity tests.

Runs the real mmdetection (with the stand-ins of mmcv_shim.py for mmcv's
compiled ops) on CPU, on reduced-width models with seeded random weights and
one synthetic image, and writes one .npz per model plus roi_align_adaptive.npz
and resize.npz.  See README.md beside this file for what each file holds.

    .mmdet-venv/bin/python tools/mmdet_reference/make_fixtures.py \
        --out tests/fixtures/mmdet
"""
import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmcv_shim  # noqa: E402

mmcv_ops = mmcv_shim.install()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import mmcv  # noqa: E402
import mmdet  # noqa: E402
import mmengine  # noqa: E402
import torchvision  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmdet.registry import MODELS, TRANSFORMS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.bbox import bbox2roi  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmdet.models.roi_heads.standard_roi_head import StandardRoIHead  # noqa
from mmcv.cnn.bricks.generalized_attention import GeneralizedAttention  # noqa

register_all_modules()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

CONFIG_ROOT = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')

# name: packaged config.  Model i tries seeds 100 * i, 100 * i + 1, ...
SPECS = {
    'faster_rcnn': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'faster_rcnn_groie': 'groie/faste-rcnn_r50_fpn_groie_1x_coco.py',
    'mask_rcnn': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn_groie': 'groie/mask-rcnn_r50_fpn_groie_1x_coco.py',
    'gcnet_mask_rcnn': 'gcnet/mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py',
    'gcnet_mask_rcnn_groie':
    'groie/mask-rcnn_r50_fpn_syncbn-r4-gcb-c3-c5-groie_1x_coco.py',
    'grid_rcnn': 'grid_rcnn/grid-rcnn_r50_fpn_gn-head_2x_coco.py',
}

# Reduced widths (see README.md).
BASE_CHANNELS = 4  # stem 4; C2..C5 16/32/64/128
FEAT = 16  # FPN, RPN, RoI features
FC_OUT = 32
NUM_CLASSES = 8
GRID_POINT_FEAT = 4  # grid head convs: 9 * 4 = 36 channels
GRID_GN_GROUPS = 12  # 3 channels per group (36 groups would be 1 each)
RPN_NMS_PRE = 300
RPN_MAX_PER_IMG = 300
RCNN_MAX_PER_IMG = 50
FC_CLS_STD = 0.3
GAMMA = 0.7

# Input geometry.
IMG_H, IMG_W = 90, 130  # the "already resized" image
ORI_H, ORI_W = 60, 87
SCALE_FACTOR = (IMG_W / ORI_W, IMG_H / ORI_H)  # (w, h) as mmdet stores it

N_BBOX_FEATS = 16
N_MASK_FEATS = 8
N_GRID = 8

# Near-tie tolerances.
TOL_RPN_SCORE = 1e-5
TOL_THR = 1e-4
TOL_DET_SCORE = 1e-6
TOL_PAIR_SCORE = 1e-6  # overlapping boxes whose NMS order could swap
TOL_IOU = 1e-4
TOL_HEATMAP = 1e-6
TOL_MASK_PROB = 1e-6
MAX_SEEDS = 100


# ----------------------------------------------------------------- config

def _replace_syncbn(obj):
    if isinstance(obj, dict):
        if obj.get('type') == 'SyncBN':
            obj['type'] = 'BN'
        for v in obj.values():
            _replace_syncbn(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _replace_syncbn(v)


def _reduce_extractor(ext):
    ext.out_channels = FEAT
    if ext.type == 'GenericRoIExtractor':
        ext.pre_cfg.in_channels = FEAT
        ext.pre_cfg.out_channels = FEAT
        ext.post_cfg.in_channels = FEAT  # num_heads stays 6: 16 // 6 = 2


def load_config(rel_path):
    """The packaged config with every reduction applied (model only)."""
    cfg = Config.fromfile(os.path.join(CONFIG_ROOT, rel_path))
    m = cfg.model
    _replace_syncbn(m)
    m.backbone.base_channels = BASE_CHANNELS
    m.backbone.init_cfg = None
    m.neck.in_channels = [BASE_CHANNELS * 4 * 2**i for i in range(4)]
    m.neck.out_channels = FEAT
    m.rpn_head.in_channels = FEAT
    m.rpn_head.feat_channels = FEAT
    rh = m.roi_head
    _reduce_extractor(rh.bbox_roi_extractor)
    rh.bbox_head.in_channels = FEAT
    rh.bbox_head.fc_out_channels = FC_OUT
    rh.bbox_head.num_classes = NUM_CLASSES
    if rh.get('mask_head') is not None:
        _reduce_extractor(rh.mask_roi_extractor)
        rh.mask_head.in_channels = FEAT
        rh.mask_head.conv_out_channels = FEAT
        rh.mask_head.num_classes = NUM_CLASSES
    if rh.get('grid_head') is not None:
        _reduce_extractor(rh.grid_roi_extractor)
        rh.grid_head.in_channels = FEAT
        rh.grid_head.point_feat_channels = GRID_POINT_FEAT
        rh.grid_head.norm_cfg.num_groups = GRID_GN_GROUPS
    m.test_cfg.rpn.nms_pre = RPN_NMS_PRE
    m.test_cfg.rpn.max_per_img = RPN_MAX_PER_IMG
    m.test_cfg.rcnn.max_per_img = RCNN_MAX_PER_IMG
    return Config(dict(model=m))


# ----------------------------------------------------------------- weights

def _fan_in(mod, w):
    if isinstance(mod, nn.ConvTranspose2d):
        # weight [in, out / groups, kh, kw]: each output pixel sees
        # in / groups * kh * kw / (sh * sw) taps.
        taps = w.shape[2] * w.shape[3] / (mod.stride[0] * mod.stride[1])
        return w.shape[0] / mod.groups * taps
    return int(np.prod(w.shape[1:]))


def randomise(model, seed):
    """Seeded weights that keep activations O(1); see README.md."""
    g = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo)
                + lo)

    # Output layers: a plain 1/fan_in variance (no ReLU gain), box
    # regressors smaller still so that decoded boxes stay sensible.
    out_scale = {
        'rpn_head.rpn_cls': 3.0,
        'rpn_head.rpn_reg': 0.3,
        'roi_head.bbox_head.fc_reg': 0.3,
        'roi_head.mask_head.conv_logits': 1.0,
        'roi_head.grid_head.deconv2': 1.0,
    }
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = mod.weight
                fan_in = _fan_in(mod, w)
                if name == 'roi_head.bbox_head.fc_cls':
                    std = FC_CLS_STD
                elif name in out_scale:
                    std = out_scale[name] * np.sqrt(1.0 / fan_in)
                else:
                    std = np.sqrt(2.0 / fan_in)
                normal(w, std)
                if mod.bias is not None:
                    normal(mod.bias, 0.1)
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                uniform(mod.weight, 0.5, 1.5)
                normal(mod.bias, 0.1)
                normal(mod.running_mean, 0.1)
                uniform(mod.running_var, 0.5, 2.0)
            elif isinstance(mod, (nn.GroupNorm, nn.LayerNorm)):
                uniform(mod.weight, 0.5, 1.5)
                normal(mod.bias, 0.1)
            elif isinstance(mod, GeneralizedAttention):
                mod.gamma.fill_(GAMMA)
                for p in ('appr_bias', 'geom_bias'):
                    if hasattr(mod, p):
                        normal(getattr(mod, p), 0.1)
        # Every parameter must have been drawn (no stray zeros/ones left).
        seen = set()
        for name, mod in model.named_modules():
            for pname, _ in mod.named_parameters(recurse=False):
                seen.add(f'{name}.{pname}' if name else pname)
        missing = [n for n, _ in model.named_parameters() if n not in seen]
        assert not missing, missing




# ----------------------------------------------------------------- input

def make_image():
    """Smooth, non-symmetric synthetic RGB uint8 image, IMG_H x IMG_W."""
    y, x = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float64)
    r = 40 + 160 * x / IMG_W + 20 * np.sin(y / 7.0)
    gch = 30 + 150 * (y / IMG_H) ** 1.5 + 15 * np.cos(x / 11.0)
    b = 200 - 120 * np.hypot(x - 0.3 * IMG_W, y - 0.7 * IMG_H) / IMG_W
    img = np.stack([r, gch, b], -1)
    # filled shapes
    img[12:40, 70:118] = (230, 40, 60)  # rectangle, upper right
    ell = ((x - 35) / 22.0)**2 + ((y - 55) / 14.0)**2 <= 1
    img[ell] = (30, 200, 90)
    ell2 = ((x - 95) / 9.0)**2 + ((y - 70) / 16.0)**2 <= 1
    img[ell2] = (250, 220, 30)
    img[62:80, 8:20] = (20, 20, 160)
    # smooth with a separable 5-tap binomial filter (edge-replicated)
    k = np.array([1, 4, 6, 4, 1], np.float64) / 16
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (2, 2)
        p = np.pad(img, pad, mode='edge')
        n = img.shape[axis]
        img = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis)
                  for i in range(5))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def preprocess(model, img_rgb):
    meta = dict(img_shape=(IMG_H, IMG_W), ori_shape=(ORI_H, ORI_W),
                scale_factor=SCALE_FACTOR)
    # mmdet's pipeline hands the preprocessor BGR (cv2) images.
    bgr = np.ascontiguousarray(img_rgb[..., ::-1])
    data = dict(inputs=[torch.from_numpy(bgr).permute(2, 0, 1).contiguous()],
                data_samples=[DetDataSample(metainfo=meta)])
    out = model.data_preprocessor(data, training=False)
    return out['inputs'], out['data_samples']


# Layers whose weights keep the drawn std (no calibration): the output
# layers and the internals of the attention and context blocks.
_NO_CALIBRATION = ('rpn_head.rpn_cls', 'rpn_head.rpn_reg',
                   'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
                   'roi_head.mask_head.conv_logits',
                   'roi_head.grid_head.deconv2')


def _calibrated(name):
    if name in _NO_CALIBRATION:
        return False
    return not any(part in name.split('.') for part in
                   ('post_module', 'context_block'))


def calibrate(model, inputs, data_samples):
    """Rescale every hidden conv/linear weight so that its output (without
    bias) has unit std on the fixture image (LSUV-style, one pass, in
    forward order).  Without it the residual stream and the BNs (whose
    running statistics are random, not measured) let activations grow
    ~2x per block, and RPN logits saturate the sigmoid."""
    done = set()

    def hook(mod, args, output):
        if mod in done or output.numel() < 2:
            return None
        done.add(mod)
        b = mod.bias
        y = output if b is None else output - b.view(
            (1, -1) + (1, ) * (output.dim() - 2))
        s = 1.0 / float(y.std())
        mod.weight.mul_(s)
        y = y * s
        return y if b is None else y + b.view(
            (1, -1) + (1, ) * (output.dim() - 2))

    handles = [
        m.register_forward_hook(hook) for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
        and _calibrated(n)
    ]
    with torch.no_grad():
        model.predict(inputs, copy.deepcopy(data_samples), rescale=False)
    for h in handles:
        h.remove()


def build(cfg, seed, img_rgb):
    model = MODELS.build(copy.deepcopy(cfg.model))
    randomise(model, seed)
    model.eval()
    inputs, data_samples = preprocess(model, img_rgb)
    calibrate(model, inputs, data_samples)
    # Round every weight to a bfloat16-representable value (still stored
    # as float32): halves the compressed size of the fixtures.
    # (Not the data preprocessor's mean and std, which are buffers too.)
    with torch.no_grad():
        for n, t in (list(model.named_parameters()) +
                     list(model.named_buffers())):
            if t.is_floating_point() and not n.startswith(
                    'data_preprocessor.'):
                t.copy_(t.to(torch.bfloat16).to(t.dtype))
    return model


# ----------------------------------------------------------------- helpers

def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(
        np.float32)


def np32(t):
    return t.detach().numpy().astype(np.float32)


def box_score(inst):
    return np.concatenate([np32(inst.bboxes), np32(inst.scores)[:, None]], 1)


def iou_matrix(a, b):
    """Pairwise IoU (float64) of x1y1x2y2 boxes, areas without +1."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, inter / union, 0.0)


def nms_margins(boxes, scores, groups, thr, tol_iou, tol_score,
                min_score=-np.inf):
    """Problems that could flip a greedy NMS (suppress at IoU > thr).

    Replays greedy NMS per group in score order.  Only boxes scoring at
    least ``min_score`` are checked: a box can only suppress lower-scoring
    ones, so below the final max_per_img cut (minus a tolerance) no decision
    can change the output.  Reports (a) a decision whose deciding IoU (the
    largest IoU with an already kept box) lies within tol_iou of thr and
    (b) pairs of boxes that overlap by more than thr - tol_iou and whose
    scores are within tol_score (their order, and so which one is kept,
    could swap).  Returns (problems, number of boxes kept)."""
    problems = []
    n_kept = 0
    for gid in np.unique(groups):
        idx = np.nonzero(groups == gid)[0]
        order = idx[np.argsort(-scores[idx], kind='stable')]
        b = boxes[order]
        s = scores[order].astype(np.float64)
        iou = iou_matrix(b, b)
        kept = []
        for j in range(len(order)):
            if kept:
                m = iou[j, kept].max()
                if abs(m - thr) <= tol_iou and s[j] >= min_score:
                    problems.append(
                        f'group {gid}: IoU {m:.7f} within {tol_iou} of {thr}')
                if m > thr:
                    continue
            kept.append(j)
        n_kept += len(kept)
        rel = s >= min_score
        close = np.abs(s[:, None] - s[None, :]) < tol_score
        over = iou > thr - tol_iou
        np.fill_diagonal(close, False)
        n = int(np.triu(close & over & rel[:, None] & rel[None, :]).sum())
        if n:
            problems.append(f'group {gid}: {n} overlapping pairs with '
                            f'scores within {tol_score}')
    return problems, n_kept


def gap_at(sorted_desc, k):
    """Gap between the k-th and (k+1)-th largest values (inf if no cut)."""
    if len(sorted_desc) <= k:
        return np.inf
    return float(sorted_desc[k - 1] - sorted_desc[k])


def check_cut(full_scores, max_per_img, gap_tol, margin_tol, gap_key,
              problem, diag, problems):
    """Records the gap at the `max_per_img` cut of the sorted scores (a
    problem if under `gap_tol`) and returns the lowest score that could
    still reach the output: the cut's score less `margin_tol`."""
    g = gap_at(full_scores, max_per_img)
    diag[gap_key] = g
    if g < gap_tol:
        problems.append(f'{problem} {g:.3g}')
    return (full_scores[max_per_img - 1] - margin_tol
            if len(full_scores) > max_per_img else -np.inf)


# ----------------------------------------------------------------- run

def run_model(cfg, seed, img_rgb):
    model = build(cfg, seed, img_rgb)
    test_cfg = model.test_cfg
    rh = model.roi_head
    out = {}
    diag = {}
    problems = []
    with torch.no_grad():
        inputs, data_samples = preprocess(model, img_rgb)
        metas = [ds.metainfo for ds in data_samples]
        out['in/image_uint8'] = img_rgb
        out['in/image'] = nhwc(inputs)
        out['in/img_shape'] = np.array([IMG_H, IMG_W], np.int32)
        out['in/ori_shape'] = np.array([ORI_H, ORI_W], np.int32)
        out['in/scale_factor'] = np.array(metas[0]['scale_factor'],
                                          np.float64)
        assert tuple(inputs.shape) == (1, 3, 96, 160), inputs.shape

        # backbone / neck
        c = model.backbone(inputs)
        x = model.neck(c)
        x_ref = model.extract_feat(inputs)
        for a, b in zip(x, x_ref):
            assert torch.equal(a, b)
        for i, t in enumerate(c):
            out[f'c{i + 2}'] = nhwc(t)
        for i, t in enumerate(x):
            out[f'p{i + 2}'] = nhwc(t)
        diag['max|c5|'] = float(c[-1].abs().max())
        diag['max|p2|'] = float(x[0].abs().max())

        # RPN
        rpn = model.rpn_head
        cls_scores, bbox_preds = rpn(x)
        featmap_sizes = [t.shape[-2:] for t in cls_scores]
        anchors = rpn.prior_generator.grid_priors(featmap_sizes,
                                                  device='cpu')
        for lvl, (cs, bp, an) in enumerate(zip(cls_scores, bbox_preds,
                                               anchors)):
            out[f'rpn_cls/p{lvl + 2}'] = nhwc(cs)
            out[f'rpn_reg/p{lvl + 2}'] = nhwc(bp)
            out[f'anchors/p{lvl + 2}'] = np32(an)
        rpn_results = rpn.predict_by_feat(cls_scores, bbox_preds,
                                          batch_img_metas=metas,
                                          rescale=False)
        rpn_ref = rpn.predict(x, data_samples, rescale=False)
        assert torch.equal(rpn_results[0].bboxes, rpn_ref[0].bboxes)
        assert torch.equal(rpn_results[0].scores, rpn_ref[0].scores)
        proposals = rpn_results[0]
        out['proposals'] = box_score(proposals)
        n_prop = len(proposals)
        diag['N'] = n_prop
        g = float(np.min(-np.diff(proposals.scores.numpy()))) \
            if n_prop > 1 else np.inf
        diag['min adjacent proposal gap'] = g
        if g < TOL_DET_SCORE:
            problems.append(f'two proposal scores {g:.3g} apart')

        # RPN near-ties: the per-level top-k cut, degenerate-box filter,
        # NMS decisions, and the max_per_img cut.
        rcfg = test_cfg.rpn
        cand_boxes, cand_scores, cand_lvls = [], [], []
        for lvl, (cs, bp, an) in enumerate(zip(cls_scores, bbox_preds,
                                               anchors)):
            s = cs[0].permute(1, 2, 0).reshape(-1).sigmoid()
            d = bp[0].permute(1, 2, 0).reshape(-1, 4)
            ss, order = s.sort(descending=True)
            g = gap_at(ss.numpy(), rcfg.nms_pre)
            if g < TOL_RPN_SCORE:
                problems.append(f'rpn level {lvl}: top-k cut gap {g:.3g}')
            keep = order[:rcfg.nms_pre]
            boxes = rpn.bbox_coder.decode(an[keep], d[keep],
                                          max_shape=metas[0]['img_shape'])
            cand_boxes.append(boxes)
            cand_scores.append(s[keep])
            cand_lvls.append(torch.full((len(keep), ), lvl))
        cb = torch.cat(cand_boxes).numpy()
        cs_ = torch.cat(cand_scores).numpy()
        cl = torch.cat(cand_lvls).numpy()
        w = cb[:, 2] - cb[:, 0]
        h = cb[:, 3] - cb[:, 1]
        if np.any(((w > 0) & (w < 1e-3)) | ((h > 0) & (h < 1e-3))):
            problems.append('rpn: a box with 0 < w or h < 1e-3')
        valid = (w > 0) & (h > 0)
        full_cfg = copy.deepcopy(rcfg)
        full_cfg.max_per_img = 10**6
        rpn_full = rpn.predict_by_feat(cls_scores, bbox_preds,
                                       batch_img_metas=metas, cfg=full_cfg,
                                       rescale=False)[0]
        assert torch.equal(rpn_full.bboxes[:n_prop], proposals.bboxes)
        full_scores = rpn_full.scores.numpy()
        min_score = check_cut(full_scores, rcfg.max_per_img, TOL_RPN_SCORE,
                              TOL_RPN_SCORE, 'rpn cut gap',
                              'rpn max_per_img cut gap', diag, problems)
        p, n_kept = nms_margins(cb[valid], cs_[valid], cl[valid],
                                rcfg.nms.iou_threshold, TOL_IOU,
                                TOL_PAIR_SCORE, min_score)
        assert n_kept == len(full_scores), (n_kept, len(full_scores))
        problems += ['rpn ' + q for q in p]

        # R-CNN box head on all proposals
        rois = bbox2roi([proposals.bboxes])
        bbox_res = rh._bbox_forward(x, rois)
        out['bbox_feats'] = nhwc(bbox_res['bbox_feats'][:N_BBOX_FEATS])
        out['cls_score'] = np32(bbox_res['cls_score'])
        if bbox_res['bbox_pred'] is not None:
            out['bbox_pred'] = np32(bbox_res['bbox_pred'])

        rcnn_cfg = test_cfg.rcnn
        # box-head detections (before grid refinement for Grid R-CNN)
        dets = StandardRoIHead.predict_bbox(rh, x, metas, rpn_results,
                                            rcnn_test_cfg=rcnn_cfg,
                                            rescale=False)[0]
        # near-ties of the R-CNN post-processing; as for the RPN, only
        # (roi, class) pairs that could reach the output are checked.
        m = len(dets)
        full_cfg = copy.deepcopy(rcnn_cfg)
        full_cfg.max_per_img = 10**6
        dets_full = StandardRoIHead.predict_bbox(rh, x, metas, rpn_results,
                                                 rcnn_test_cfg=full_cfg,
                                                 rescale=False)[0]
        assert torch.equal(dets_full.bboxes[:m], dets.bboxes)
        full_scores = dets_full.scores.numpy()
        min_score = check_cut(full_scores, rcnn_cfg.max_per_img,
                              TOL_DET_SCORE, TOL_THR, 'det cut gap',
                              'rcnn max_per_img cut gap', diag, problems)
        scores = torch.softmax(bbox_res['cls_score'], -1)[:, :-1].numpy()
        rel = scores[scores >= min_score]
        dist = float(np.abs(rel - rcnn_cfg.score_thr).min()) if rel.size \
            else np.inf
        diag['min|score-thr|'] = dist
        if dist <= TOL_THR:
            problems.append(f'a class score within {dist:.3g} of score_thr')
        raw = rh.bbox_head.predict_by_feat(
            rois=(rois, ), cls_scores=(bbox_res['cls_score'], ),
            bbox_preds=(bbox_res['bbox_pred'], ), batch_img_metas=metas,
            rcnn_test_cfg=None, rescale=False)[0]
        rb = raw.bboxes.numpy()
        if rb.shape[1] == 4:
            rb = np.repeat(rb[:, None], NUM_CLASSES, 1)
        rb = rb.reshape(len(rb), -1, 4)
        sel = scores > rcnn_cfg.score_thr
        ri, ci = np.nonzero(sel)
        p, n_kept = nms_margins(rb[ri, ci], scores[ri, ci], ci,
                                rcnn_cfg.nms.iou_threshold, TOL_IOU,
                                TOL_PAIR_SCORE, min_score)
        assert n_kept == len(full_scores), (n_kept, len(full_scores))
        problems += ['rcnn ' + q for q in p]
        ds = dets.scores.numpy()
        g = float(np.min(-np.diff(ds))) if m > 1 else np.inf
        diag['min adjacent det gap'] = g
        if g < TOL_DET_SCORE:
            problems.append(f'two detection scores {g:.3g} apart')
        diag['M'] = m
        diag['pairs>thr'] = int(sel.sum())

        ref = model.predict(inputs, copy.deepcopy(data_samples),
                            rescale=False)[0].pred_instances

        if 'grid_head' in dict(rh.named_children()):
            out['grid/bboxes_before'] = box_score(dets)
            grid_rois = bbox2roi([dets.bboxes])
            gfeats = rh.grid_roi_extractor(
                x[:len(rh.grid_roi_extractor.featmap_strides)], grid_rois)
            rh.grid_head.test_mode = True
            gpred = rh.grid_head(gfeats)['fused']
            out['grid/feats'] = nhwc(gfeats[:N_GRID])
            out['grid/pred'] = nhwc(gpred[:N_GRID])
            # near-ties of the heatmap arg-max (on sigmoid, as mmdet does)
            sg = gpred.sigmoid().reshape(gpred.shape[0] * gpred.shape[1], -1)
            top2 = sg.topk(2, dim=1).values.numpy()
            g = float((top2[:, 0] - top2[:, 1]).min())
            diag['min heatmap top-2 gap'] = g
            if g < TOL_HEATMAP:
                problems.append(f'grid heatmap top-2 gap {g:.3g}')
            final = rh.predict_bbox(x, metas, rpn_results,
                                    rcnn_test_cfg=rcnn_cfg,
                                    rescale=False)[0]
        else:
            final = dets
        out['det_bboxes'] = box_score(final)
        out['det_labels'] = final.labels.numpy().astype(np.int32)
        assert torch.equal(ref.bboxes, final.bboxes)
        assert torch.equal(ref.labels, final.labels)

        if rh.with_mask:
            mask_rois = bbox2roi([dets.bboxes])
            mres = rh._mask_forward(x, mask_rois)
            out['mask_feats'] = nhwc(mres['mask_feats'][:N_MASK_FEATS])
            mp = mres['mask_preds']
            out['mask_pred'] = np32(mp[torch.arange(m), dets.labels])
            pasted = rh.predict_mask(x, metas, [copy.deepcopy(dets)],
                                     rescale=True)[0]
            masks = pasted.masks.numpy().astype(bool)
            assert masks.shape == (m, ORI_H, ORI_W), masks.shape
            out['masks'] = np.packbits(masks)
            out['masks_shape'] = np.array(masks.shape, np.int32)
            out['det_bboxes_rescaled'] = box_score(pasted)
            ref_r = model.predict(inputs, copy.deepcopy(data_samples),
                                  rescale=True)[0].pred_instances
            assert torch.equal(ref_r.bboxes, pasted.bboxes)
            assert torch.equal(ref_r.masks, pasted.masks)
            diag['mask px'] = int(masks.sum())
            # pasted probabilities near the 0.5 threshold
            probs = _paste_probs(mp, dets, metas[0])
            n = int((np.abs(probs - 0.5) < TOL_MASK_PROB).sum())
            diag['min|p-0.5|'] = float(np.abs(probs - 0.5).min())
            if n:
                problems.append(f'{n} pasted mask probabilities within '
                                f'{TOL_MASK_PROB} of 0.5')
            assert np.array_equal(probs >= 0.5, masks)
    return model, out, diag, problems


def _paste_probs(mask_preds, dets, meta):
    """The probabilities mmdet thresholds, at ori_shape (for diagnostics)."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import \
        _do_paste_mask
    m = len(dets)
    p = mask_preds[torch.arange(m), dets.labels][:, None].sigmoid()
    sf = dets.bboxes.new_tensor(meta['scale_factor']).repeat((1, 2))
    boxes = dets.bboxes / sf
    probs, _ = _do_paste_mask(p, boxes, ORI_H, ORI_W, skip_empty=False)
    return probs.numpy()


def weights(model):
    w = {}
    for k, v in model.state_dict().items():
        if k.endswith('num_batches_tracked'):
            continue
        w['w/' + k] = v.detach().numpy().astype(np.float32)
    return w


def versions():
    return (f'mmdet {mmdet.__version__}, mmcv-lite {mmcv.__version__}, '
            f'mmengine {mmengine.__version__}, torch {torch.__version__}, '
            f'torchvision {torchvision.__version__}, numpy {np.__version__}')


# ----------------------------------------------------------------- extra

def roi_align_fixture():
    rng = np.random.default_rng(1234)
    feats = rng.standard_normal((1, 24, 40, 16)).astype(np.float32)
    # Image 96 x 160 pixels, features at stride 4.
    boxes = [
        [10.0, 12.0, 10.3, 12.2],  # sub-pixel
        [50.2, 40.7, 50.9, 41.1],  # sub-pixel
        [3.3, 5.1, 5.0, 6.0],  # tiny
        [0.0, 0.0, 160.0, 96.0],  # whole image
        [0.0, 0.0, 159.0, 95.0],
        [20.5, 30.0, 24.5, 150.0 * 0.6],  # tall narrow, clipped
        [5.0, 40.0, 125.0, 44.0],  # 120 x 4 px
        [30.0, 2.0, 34.0, 94.0],  # 4 x 92 px
        [1.0, 45.5, 159.0, 47.5],  # 158 x 2 px
        [-20.0, -10.0, 30.0, 25.0],  # partly outside, top-left
        [140.0, 80.0, 190.0, 120.0],  # partly outside, bottom-right
        [-30.0, 20.0, 200.0, 60.0],  # wider than the image
        [150.0, 90.0, 175.0, 110.0],  # mostly outside
        [170.0, 100.0, 180.0, 105.0],  # fully outside
        [0.0, 0.0, 3.9, 3.9],  # one stride
        [12.25, 7.75, 40.25, 35.75],
        [100.0, 10.0, 100.0, 30.0],  # zero width
        [60.0, 60.0, 60.0, 60.0],  # a point
        [7.0, 7.0, 35.0, 35.0],  # 28 px = 7 feature px
        [7.0, 7.0, 35.1, 35.1],  # just over 7 feature px
        [2.5, 3.5, 158.5, 93.5],
        [45.0, 10.0, 120.0, 85.0],
    ]
    while len(boxes) < 30:
        x1, y1 = rng.uniform(-10, 150), rng.uniform(-10, 85)
        bw, bh = rng.uniform(0.5, 90), rng.uniform(0.5, 60)
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    boxes = np.array(boxes, np.float32)
    t = torch.from_numpy(feats).permute(0, 3, 1, 2).contiguous()
    rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(boxes)],
                     1)
    out = dict(features=feats, boxes=boxes)
    for key, sr in (('pooled', 0), ('pooled_sr2', 2)):
        layer = mmcv_ops.RoIAlign(output_size=7, spatial_scale=0.25,
                                  sampling_ratio=sr, aligned=True)
        assert layer.use_torchvision
        with torch.no_grad():
            out[key] = nhwc(layer(t, rois.clone()))
    out['versions'] = np.array(versions())
    return out


RESIZE_SIZES = [
    (480, 640), (427, 640), (640, 427), (360, 640), (640, 481), (333, 500),
    (375, 500), (500, 375), (640, 640), (612, 612), (800, 1333), (1333, 800),
    (800, 800), (1000, 1000), (1, 1), (2, 3), (7, 5), (16, 16), (31, 47),
    (100, 1000), (1000, 100), (50, 2000), (2000, 50), (10, 1000), (299, 301),
    (301, 299), (479, 641), (641, 479), (427, 641), (333, 499), (1, 800),
    (800, 1), (224, 224), (123, 457), (457, 123), (600, 1000), (1024, 768),
    (768, 1024), (3000, 4000), (4000, 3000), (481, 640), (426, 640),
]


def resize_fixture():
    resize = TRANSFORMS.build(
        dict(type='Resize', scale=(1333, 800), keep_ratio=True))
    sizes, new_sizes, factors = [], [], []
    for h, w in RESIZE_SIZES:
        new_w, new_h = mmcv.rescale_size((w, h), (1333, 800))
        if new_w == 0 or new_h == 0:
            continue
        res = resize.transform(
            dict(img=np.zeros((h, w, 3), np.uint8), img_shape=(h, w),
                 ori_shape=(h, w)))
        assert tuple(res['img_shape']) == (new_h, new_w), (h, w)
        sizes.append((h, w))
        new_sizes.append(res['img_shape'])
        factors.append(res['scale_factor'])
    return dict(sizes=np.array(sizes, np.int32),
                new_sizes=np.array(new_sizes, np.int32),
                scale_factors=np.array(factors, np.float64),
                versions=np.array(versions()))


# ----------------------------------------------------------------- main

def save(path, arrays):
    np.savez_compressed(path, **arrays)
    return os.path.getsize(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='tests/fixtures/mmdet')
    ap.add_argument('--only', nargs='*', default=None,
                    help='model names to generate (default: all)')
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    img = make_image()
    total = 0
    names = args.only if args.only else list(SPECS)
    for name in names:
        cfg = load_config(SPECS[name])
        t0 = time.time()
        first = 100 * list(SPECS).index(name)
        for seed in range(first, first + MAX_SEEDS):
            torch.manual_seed(seed)
            model, out, diag, problems = run_model(cfg, seed, img)
            if not problems:
                break
            print(f'{name}: seed {seed} rejected: {problems[:3]}'
                  f'{" ..." if len(problems) > 3 else ""}')
        else:
            raise SystemExit(f'{name}: no seed without near-ties')
        arrays = {
            'config': np.array(cfg.pretty_text),
            'versions': np.array(versions()),
            'seed': np.array(seed, np.int32),
        }
        arrays.update(weights(model))
        arrays.update(out)
        path = os.path.join(args.out, f'{name}.npz')
        size = save(path, arrays)
        total += size
        n_params = sum(p.numel() for p in model.parameters())
        print(f'{name}: seed {seed}, params {n_params}, N {diag["N"]}, '
              f'M {diag["M"]}, {size / 1024:.0f} KiB, '
              f'{time.time() - t0:.1f} s')
        print('   ', {k: (round(v, 8) if isinstance(v, float) else v)
                      for k, v in diag.items()})
    for fname, arrays in (('roi_align_adaptive.npz', roi_align_fixture()),
                          ('resize.npz', resize_fixture())):
        size = save(os.path.join(args.out, fname), arrays)
        total += size
        print(f'{fname}: {size / 1024:.0f} KiB')
    print(f'total {total / 1024:.0f} KiB')


if __name__ == '__main__':
    main()
