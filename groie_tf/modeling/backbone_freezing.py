"""mmdetection's `frozen_stages` and `norm_eval` for Model Garden's ResNet.

Every Table V detector of the paper fine-tunes an ImageNet ResNet with
mmdetection's defaults: the stem and the first stage frozen
(`frozen_stages=1`) and every batch norm of the backbone using its
ImageNet statistics (`norm_eval=True`) while its scale and offset still
train. Model Garden has neither: `freeze_backbone` freezes all of it, and
`bn_trainable=False` freezes the scale and offset too.
"""

from typing import List

import tf_keras
from official.vision.modeling.backbones import resnet
from official.vision.modeling.layers import nn_blocks

def resnet_stages(backbone: resnet.ResNet) -> List[List[tf_keras.layers.Layer]]:
  """The layers of `backbone` by stage: `[stem, stage 1, ..., stage 4]`.

  Model Garden's ResNet is a functional model whose layers come in
  topological order: the stem, then each stage's blocks, each stage closed
  by an identity activation named `block_group_l<level>`.
  """
  stages: List[List[tf_keras.layers.Layer]] = [[]]
  for layer in backbone.layers:
    if len(stages) == 1 and isinstance(
        layer, (nn_blocks.ResidualBlock, nn_blocks.BottleneckBlock)):
      stages.append([])  # the first block opens stage 1
    stages[-1].append(layer)
    if layer.name == f'block_group_l{len(stages)}':
      stages.append([])
  stages.pop()  # nothing follows the last stage
  if len(stages) != 5:
    raise ValueError(f'Expected a stem and 4 stages in {backbone.name}, '
                     f'found {len(stages) - 1} stages.')
  return stages


def freeze_stages(backbone: tf_keras.Model, frozen_stages: int) -> None:
  """Freezes the stem and stages 1..`frozen_stages` (-1: nothing).

  A frozen layer keeps its weights (it leaves `trainable_variables`) and
  its batch norms use their moving statistics, as mmdetection's
  `_freeze_stages` puts them in eval mode.
  """
  if frozen_stages == -1:
    return
  if not isinstance(backbone, resnet.ResNet):
    raise ValueError('frozen_stages needs the ResNet backbone, got '
                     f'{type(backbone).__name__}; set it to -1.')
  stages = resnet_stages(backbone)
  if not 0 <= frozen_stages < len(stages):
    raise ValueError(f'frozen_stages must be in -1..{len(stages) - 1}, got '
                     f'{frozen_stages}.')
  for stage in stages[:frozen_stages + 1]:
    for layer in stage:
      layer.trainable = False


def _call_in_inference_mode(layer: tf_keras.layers.Layer) -> None:
  call = layer.call

  def call_with_moving_statistics(inputs, training=None):
    del training
    return call(inputs, training=False)

  layer.call = call_with_moving_statistics


def freeze_norm_statistics(backbone: tf_keras.Model) -> int:
  """Every batch norm of `backbone` normalises with its moving statistics
  and never updates them; scale and offset still train (`norm_eval`).

  Returns:
    How many batch norms were changed.
  """
  norms = [layer for layer in backbone.submodules
           if isinstance(layer, tf_keras.layers.BatchNormalization)]
  for layer in norms:
    _call_in_inference_mode(layer)
  return len(norms)
