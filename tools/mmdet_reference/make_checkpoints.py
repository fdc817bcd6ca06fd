"""PyTorch checkpoints for groie-tf's converter tests, written by PyTorch.

    .mmdet-venv/bin/python tools/mmdet_reference/make_checkpoints.py \
        --fixtures tests/fixtures/mmdet
    .mmdet-venv/bin/python tools/mmdet_reference/make_checkpoints.py \
        --published /tmp/published --images a.jpg b.jpg

`--fixtures` writes, beside the stage fixtures (small, committed):
- `torch_pickle_legacy.pth` and `torch_pickle_zip.pth`: one dict in
  torch's two formats (legacy is what mmdetection publishes), with what a
  reader can meet (dtypes, 0-d, non-contiguous and offset views of one
  storage, an mmengine object in meta); `torch_pickle.npz` holds the
  values they must read as;
- `mask_rcnn_groie.pth`: the weights of `mask_rcnn_groie.npz` as a
  published checkpoint (legacy format, `meta` as mmdetection 2.x wrote it);
- `published_shapes.npz`: each published config's full-width state-dict
  names (`<config>/keys`) and shapes (`<config>/shapes`, padded with -1 to
  4 dimensions), no values.

`--published` builds each published config at full width with seeded
random weights (calibrated as make_fixtures.py's), saves it as a legacy
`.pth`, runs mmdetection's test pipeline on each image and writes what the
converted model must reproduce: `<name>.pth` and `<name>.npz` per model.
"""
import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (installs mmcv_shim)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.dataset import Compose  # noqa: E402
from mmdet.datasets import CocoDataset  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures.bbox import bbox2roi  # noqa: E402

# The published models' packaged configs (mmdetection 3.x names).
PUBLISHED = {
    'faster-rcnn_r50_fpn_1x_coco': 'faster_rcnn/',
    'faste-rcnn_r50_fpn_groie_1x_coco': 'groie/',
    'grid-rcnn_r50_fpn_gn-head_1x_coco': 'grid_rcnn/',
    'mask-rcnn_r50_fpn_1x_coco': 'mask_rcnn/',
    'mask-rcnn_r50_fpn_groie_1x_coco': 'groie/',
    'mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco': 'gcnet/',
    'mask-rcnn_r50_fpn_syncbn-r4-gcb-c3-c5-groie_1x_coco': 'groie/',
    'mask-rcnn_r101-syncbn-gcb-r4-c3-c5_fpn_1x_coco': 'gcnet/',
    'mask-rcnn_r101_fpn_syncbn-r4-gcb_c3-c5-groie_1x_coco': 'groie/',
}
SCORE_THR = 0.01  # mmdetection's 0.05, lowered for random weights


def save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return os.path.getsize(path)


def pickle_fixtures(out):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    tensors = {
        'float': torch.randn(2, 3, 4, generator=g),
        'transposed': base.t(),  # non-contiguous view
        'offset': base[1:3, 2:5],  # a view at an offset of base's storage
        'base': base,
        'long': torch.arange(-3, 4, dtype=torch.int64),
        'scalar': torch.tensor(7, dtype=torch.int64),  # num_batches_tracked
        'double': torch.randn(3, generator=g, dtype=torch.float64),
        'half': torch.randn(5, generator=g).half(),
        'bool': torch.tensor([True, False, True]),
        'empty': torch.zeros(0, 4),
    }
    state_dict = torch.nn.Module().state_dict()  # an OrderedDict with _metadata
    state_dict.update(tensors)
    content = {'meta': {'CLASSES': ('a', 'b'), 'epoch': 12,
                        'cfg': ConfigDict(model=dict(type='MaskRCNN'))},
               'state_dict': state_dict}
    sizes = save_legacy(content, os.path.join(out, 'torch_pickle_legacy.pth'))
    torch.save(content, os.path.join(out, 'torch_pickle_zip.pth'))
    sizes += os.path.getsize(os.path.join(out, 'torch_pickle_zip.pth'))
    np.savez(os.path.join(out, 'torch_pickle.npz'),
             **{k: v.numpy() for k, v in tensors.items()})
    print(f'torch_pickle_*.pth: {sizes / 1024:.0f} KiB')


def reduced_checkpoint(out, name='mask_rcnn_groie'):
    with np.load(os.path.join(out, f'{name}.npz')) as data:
        weights = {k[2:]: torch.from_numpy(data[k]) for k in data
                   if k.startswith('w/')}
    meta = {'mmdet_version': '2.1.0+abcdef0',
            'exp_name': 'mask_rcnn_r50_fpn_groie_1x_coco.py',
            'CLASSES': tuple(f'class_{i}' for i in range(mf.NUM_CLASSES))}
    size = save_legacy({'meta': meta, 'state_dict': weights},
                       os.path.join(out, f'{name}.pth'))
    print(f'{name}.pth: {size / 1024:.0f} KiB')


def full_config(name):
    cfg = Config.fromfile(os.path.join(mf.CONFIG_ROOT, PUBLISHED[name],
                                       name + '.py'))
    mf._replace_syncbn(cfg.model)  # pylint: disable=protected-access
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg.rcnn.score_thr = SCORE_THR
    return cfg


def published_shapes(out):
    arrays = {}
    for name in PUBLISHED:
        model = MODELS.build(copy.deepcopy(full_config(name).model))
        state_dict = model.state_dict()
        # Shapes padded to 4 dimensions with -1.
        arrays[f'{name}/keys'] = np.array(list(state_dict))
        arrays[f'{name}/shapes'] = np.array(
            [list(v.shape) + [-1] * (4 - v.dim()) for v in state_dict.values()],
            np.int64)
    path = os.path.join(out, 'published_shapes.npz')
    np.savez_compressed(path, **arrays)
    print(f'published_shapes.npz: {os.path.getsize(path) / 1024:.0f} KiB')


def test_inputs(cfg, model, image_path):
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    data = pipeline(dict(img_path=image_path, img_id=0))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        training=False)
    return batch['inputs'], batch['data_samples']


def run_published(name, seed, images, out):
    cfg = full_config(name)
    model = MODELS.build(copy.deepcopy(cfg.model))
    mf.randomise(model, seed)
    model.eval()
    inputs, samples = test_inputs(cfg, model, images[0])
    mf.calibrate(model, inputs, samples)
    arrays = {}
    with torch.no_grad():
        for i, path in enumerate(images):
            inputs, samples = test_inputs(cfg, model, path)
            x = model.extract_feat(inputs)
            proposals = model.rpn_head.predict(x, copy.deepcopy(samples),
                                               rescale=False)[0]
            result = model.roi_head.predict(x, [proposals],
                                            copy.deepcopy(samples),
                                            rescale=False)[0]
            meta = samples[0].metainfo
            arrays[f'{i}/image'] = mf.nhwc(inputs)
            arrays[f'{i}/img_shape'] = np.array(meta['img_shape'], np.int32)
            arrays[f'{i}/proposals'] = mf.box_score(proposals)
            arrays[f'{i}/boxes'] = mf.box_score(result)
            arrays[f'{i}/labels'] = result.labels.numpy().astype(np.int32)
            if model.roi_head.with_mask and len(result.bboxes):
                mask = model.roi_head._mask_forward(  # pylint: disable=protected-access
                    x, bbox2roi([result.bboxes]))['mask_preds']
                logits = mask[torch.arange(len(result.labels)), result.labels]
                arrays[f'{i}/mask_probabilities'] = mf.np32(logits.sigmoid())
    meta = {'mmdet_version': mf.mmdet.__version__,
            'exp_name': name + '.py',
            'CLASSES': CocoDataset.METAINFO['classes']}
    size = save_legacy({'meta': meta, 'state_dict': model.state_dict()},
                       os.path.join(out, name + '.pth'))
    np.savez_compressed(os.path.join(out, name + '.npz'), **arrays)
    return size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fixtures', help='the stage fixtures\' folder')
    ap.add_argument('--published', help='a folder for full-width models')
    ap.add_argument('--images', nargs='*', default=[])
    ap.add_argument('--only', nargs='*', default=None)
    args = ap.parse_args(argv)
    if args.fixtures:
        pickle_fixtures(args.fixtures)
        reduced_checkpoint(args.fixtures)
        published_shapes(args.fixtures)
    if args.published:
        if not args.images:
            raise SystemExit('--published needs --images')
        os.makedirs(args.published, exist_ok=True)
        for index, name in enumerate(args.only or PUBLISHED):
            start = time.time()
            size = run_published(name, 1000 + index, args.images,
                                 args.published)
            print(f'{name}: {size / 2**20:.0f} MiB, '
                  f'{time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
