"""Starting a GC ResNet from a plain ResNet checkpoint (ImageNet weights).

mmdetection starts GC-Net from torchvision's ResNet-50 with a non-strict
load: the context blocks, absent from the checkpoint, keep their identity
initialisation. Model Garden's task restores the backbone and then asserts
that every variable was found, which a plain ResNet checkpoint cannot
satisfy. Here a plain twin of the backbone is restored with that strict
assertion, so every non-GC variable is checked to be in the checkpoint, and
its weights are copied into the GC ResNet.
"""

from absl import logging
import tensorflow as tf

from groie_tf.layers import context_block
from groie_tf.modeling import gc_resnet
from groie_tf.modeling import resnet

_GC_CONFIG_KEYS = ('gc_levels', 'gc_ratio', 'gc_pooling', 'gc_fusion')


def context_blocks(backbone: gc_resnet.GCResNet):
  """The backbone's context blocks, in order."""
  return [layer.context_block for layer in backbone.layers
          if isinstance(layer, (gc_resnet.GCBottleneckBlock,
                                gc_resnet.GCResidualBlock))]


def plain_twin(backbone: gc_resnet.GCResNet) -> resnet.ResNet:
  """The ResNet with the backbone's arguments (its padding too), no context
  block."""
  config = {k: v for k, v in backbone.get_config().items()
            if k not in _GC_CONFIG_KEYS}
  return resnet.ResNet(**config)


def _is_gc_checkpoint(path: str) -> bool:
  # Every context block has a transform named after its fusion; a
  # squeeze-excitation ResNet's checkpoint has none.
  return any(f'/{fusion}/' in name for name, _ in tf.train.list_variables(path)
             for fusion in context_block.FUSION_TYPES)


def restore_backbone(backbone: gc_resnet.GCResNet, path: str) -> None:
  """Restores `backbone` from the backbone checkpoint at `path`.

  A checkpoint with context blocks (a GC ResNet's) restores everything,
  strictly. A plain ResNet's restores every other variable, strictly, and
  leaves the context blocks as they are (the identity, if new).

  Raises:
    AssertionError: a variable of the backbone (or of its plain twin) is
      missing from the checkpoint (Model Garden's own check).
    ValueError: the twin's variables do not pair up with the backbone's.
  """
  if _is_gc_checkpoint(path):
    tf.train.Checkpoint(backbone=backbone).read(
        path).expect_partial().assert_existing_objects_matched()
    logging.info('Restored the GC ResNet backbone, context blocks included, '
                 'from %s.', path)
    return
  twin = plain_twin(backbone)
  tf.train.Checkpoint(backbone=twin).read(
      path).expect_partial().assert_existing_objects_matched()
  blocks = context_blocks(backbone)
  gc_ids = {id(v) for block in blocks for v in block.weights}
  targets = [v for v in backbone.weights if id(v) not in gc_ids]
  sources = twin.weights
  # Pairs in order; the shape and the kind of variable (kernel, gamma,
  # moving_mean, ...) must agree for each pair.
  signature = lambda v: (tuple(v.shape), v.name.split('/')[-1])
  if [signature(v) for v in targets] != [signature(v) for v in sources]:
    raise ValueError(
        f'The plain ResNet twin of {backbone.name} has {len(sources)} '
        f'variables that do not pair up with its {len(targets)} non-GC '
        'variables: cannot copy.')
  for target, source in zip(targets, sources):
    target.assign(source)
  logging.info(
      'Restored %d variables of the GC ResNet backbone from the plain ResNet '
      'checkpoint %s; its %d context blocks (%d variables) are not in it and '
      'keep their initialisation (the identity, in a new model).',
      len(targets), path, len(blocks), len(gc_ids))
