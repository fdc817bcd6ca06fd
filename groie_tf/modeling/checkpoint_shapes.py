"""The shapes of a model's variables in a checkpoint, by object path.

Export refuses a checkpoint that does not hold exactly the model's
variables (`serving/export.py`), and a warm start with another class count
finds the class layers by them (`modeling/class_change.py`).
"""

import os
import tempfile
from typing import Dict, List

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from groie_tf.errors import CheckpointError


def of_checkpoint(checkpoint_path: str) -> Dict[str, List[int]]:
  """Path (`roi_aligner/pre_modules/0/kernel`) -> shape of the model's
  variables in a checkpoint.

  Read from the checkpoint's object graph, under its `model` node, so the
  optimizer's slots and the step counter are left out, and a trainer's
  checkpoint compares with a bare `tf.train.Checkpoint(model=...)`.
  """
  reader = tf.train.load_checkpoint(checkpoint_path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  roots = [c.node_id for c in graph.nodes[0].children if c.local_name == 'model']
  if not roots:
    raise CheckpointError(f'{checkpoint_path} holds no `model`: it is not a Model '
                     'Garden training checkpoint.')
  # Layers are reachable by several paths (`detection_head` and
  # `_config_dict/detection_head`). Name each variable by its shortest path,
  # ties broken alphabetically, so the name does not depend on the order in
  # which a model tracked its attributes.
  best, frontier = {roots[0]: ''}, [roots[0]]
  while frontier:
    candidates = {}
    for node_id in frontier:
      for child in graph.nodes[node_id].children:
        if child.node_id in best:
          continue
        path = (f'{best[node_id]}/{child.local_name}' if best[node_id]
                else child.local_name)
        if path < candidates.get(child.node_id, '\uffff'):
          candidates[child.node_id] = path
    best.update(candidates)
    frontier = list(candidates)
  shapes = reader.get_variable_to_shape_map()
  return {path: shapes[attribute.checkpoint_key]
          for node_id, path in best.items()
          for attribute in graph.nodes[node_id].attributes
          if attribute.name == 'VARIABLE_VALUE'}


def of_model(model: tf.Module) -> Dict[str, List[int]]:
  """`of_checkpoint` of `model`'s own variables (written to a scratch
  checkpoint, so that paths are named the same way)."""
  with tempfile.TemporaryDirectory() as scratch:
    return of_checkpoint(
        tf.train.Checkpoint(model=model).write(os.path.join(scratch, 'ckpt')))
