"""mmdetection's detector, layer for layer, in Model Garden's Mask R-CNN.

`task.model.layout: mmdetection` builds (`groie_tf.modeling.builder`)
Model Garden's `MaskRCNNModel` with these parts in place of its own:

- the ResNet padded as PyTorch pads (`groie_tf.modeling.resnet`);
- `fpn.FPN`: no normalisation, P6 = P5 subsampled by 2;
- `heads`: the RPN head, `Shared2FCBBoxHead` and `FCNMaskHead`, without
  normalisation;
- `proposals`: anchors centred on the grid points (`groie_tf.ops.anchors`),
  zero-size proposals dropped before the NMS, boxes decoded with both
  clamps of mmdetection;
- the RoI extractors in mmdetection's form (`GRoIE` with its level rule
  for the baselines).

Each part keeps Model Garden's call convention and output layout (classes
with background at 0, deltas ordered (dy, dx, dh, dw)), so Model Garden's
model, losses and evaluation run them unchanged.
`tests/test_mmdetection_fixtures.py` compares every stage with fixtures
written by the real mmdetection.
"""
