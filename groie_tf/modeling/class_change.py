"""Starting a detector from a checkpoint of the same detector trained on
another class count (a converted COCO model fine-tuned on a user's data).

Only the class layers' shapes depend on `num_classes`: the box heads'
classifier and box regressor and the mask head's logits. Everything else is
restored; those keep the initialisation the model was built with.
"""

from typing import Callable, List

import tensorflow as tf
import tf_keras

from groie_tf.errors import CheckpointError
from groie_tf.modeling import checkpoint_shapes

# The heads' attributes holding class layers (Model Garden's heads and the
# mmdetection layout's use the same names).
CLASS_LAYERS = ('_classifier', '_box_regressor', '_mask_regressor')


def class_layer_variables(model: tf_keras.Model) -> List[tf.Variable]:
  """The variables of `model`'s class layers, heads in order."""
  heads = list(model.detection_head)
  if getattr(model, 'mask_head', None) is not None:
    heads.append(model.mask_head)
  return [variable for head in heads for name in CLASS_LAYERS
          if getattr(head, name, None) is not None
          for variable in getattr(head, name).variables]


def checkpoint_class_count(model: tf_keras.Model,
                           checkpoint_path: str) -> int:
  """The class count the checkpoint's box classifier has, after checking
  that only class layers differ from `model`'s.

  Raises:
    CheckpointError: a variable other than a class layer's has another
      shape, or a variable is missing from either side.
  """
  own = checkpoint_shapes.of_model(model)
  found = checkpoint_shapes.of_checkpoint(checkpoint_path)
  if set(own) != set(found):
    missing = sorted(set(own) ^ set(found))[:5]
    raise CheckpointError(
        f'{checkpoint_path} is not a checkpoint of this detector (variables '
        f'differ: {", ".join(missing)}).')
  other = sorted(p for p in own if own[p] != found[p] and
                 not any(f'/{name}/' in f'/{p}' for name in CLASS_LAYERS))
  if other:
    raise CheckpointError(
        f'{checkpoint_path} differs from the model beyond its class layers: '
        + ', '.join(f'{p} {found[p]} there, {own[p]} here' for p in other[:5]))
  # One classifier per box head (Cascade R-CNN: one per stage), all of
  # num_classes outputs.
  classifiers = sorted(p for p in own if p.endswith('/_classifier/kernel'))
  if not classifiers:
    raise CheckpointError('the model has no box classifier (_classifier).')
  return found[classifiers[0]][-1]


def restore_with_new_classes(model: tf_keras.Model, checkpoint_path: str,
                             build_twin: Callable[[int], tf_keras.Model]
                             ) -> int:
  """Restores every variable of `model` but its class layers from a
  checkpoint of the same detector with another class count.

  Args:
    model: the built detector.
    checkpoint_path: a checkpoint file prefix.
    build_twin: builds this detector with a given class count, all its
      weights created (the checkpoint is read into it whole).

  Returns:
    The checkpoint's class count.
  """
  num_classes = checkpoint_class_count(model, checkpoint_path)
  twin = build_twin(num_classes)
  tf.train.Checkpoint(model=twin).read(
      checkpoint_path).expect_partial().assert_existing_objects_matched()
  skipped = {id(v) for v in class_layer_variables(model)}
  twin_skipped = {id(v) for v in class_layer_variables(twin)}
  mine = [v for v in model.variables if id(v) not in skipped]
  theirs = [v for v in twin.variables if id(v) not in twin_skipped]
  if [v.shape for v in mine] != [v.shape for v in theirs]:
    raise CheckpointError('the detector built with the checkpoint\'s class '
                          'count does not match this one.')
  for variable, value in zip(mine, theirs):
    variable.assign(value)
  return num_classes
