"""What the backbone-freezing tests compare: weights by stage, before and after."""

import numpy as np

from groie_tf.modeling import backbone_freezing


def variables_by_stage(backbone):
  """{stage index: [variables]} over the stem (0) and stages 1-4."""
  out = {}
  for index, stage in enumerate(backbone_freezing.resnet_stages(backbone)):
    out[index] = [v for layer in stage for v in layer.weights]
  return out


def changed_weights(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]
