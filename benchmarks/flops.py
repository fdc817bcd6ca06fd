"""Floating-point operations of a traced function, counted from its graph.

Ops count with the 'flops' statistic TF registers for them (Conv2D, MatMul,
BatchMatMul, element-wise ops, ...), which is what TF's profiler sums. TF
registers none for `Einsum`, which the attention uses, so an Einsum counts
2 x the product of every index's extent (a multiply and an add per term).
RoIAlign's bilinear sampling (`CropAndResize`, gathers) moves memory and
counts nothing, as in the usual FLOP counts of detectors.
"""

import math
from typing import Sequence

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops


def _einsum_flops(op) -> int:
  inputs = op.get_attr('equation').decode().replace(' ', '').split('->')[0]
  extents = {}
  for term, tensor in zip(inputs.split(','), op.inputs):
    extents.update(zip(term, tensor.shape.as_list()))
  return 2 * math.prod(extents.values())


def op_flops(op) -> int:
  """FLOPs of one graph op; 0 for ops without a registered count."""
  if op.type == 'Einsum':
    return _einsum_flops(op)
  try:
    stats = tf_ops.get_stats_for_node_def(op.graph, op.node_def, 'flops')
  except ValueError:  # A shape the count needs is not static.
    return 0
  return stats.value or 0


def graph_flops(graph: tf.Graph, scopes: Sequence[str] = ()) -> int:
  """FLOPs of the ops in `graph`; only of ops under `scopes` if given.

  Function-call ops are not entered: trace with everything inline (the
  default for Keras layers called inside one `tf.function`).
  """
  return sum(op_flops(op) for op in graph.get_operations()
             if not scopes or any(f'{s}/' in op.name for s in scopes))

