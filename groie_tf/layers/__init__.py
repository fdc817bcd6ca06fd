"""Keras layers (tf_keras, Keras 2) of groie_tf."""

from groie_tf.layers.context_block import ContextBlock
from groie_tf.layers.generalized_attention import GeneralizedAttention
from groie_tf.layers.grid_head import GridHead
from groie_tf.layers.groie import AGGREGATIONS
from groie_tf.layers.groie import GRoIE
from groie_tf.layers.groie import LEVEL_SELECTIONS
from groie_tf.layers.groie import MODULES
from groie_tf.layers.non_local import NonLocal2D

__all__ = ['GRoIE', 'GeneralizedAttention', 'NonLocal2D', 'ContextBlock',
           'GridHead', 'LEVEL_SELECTIONS', 'AGGREGATIONS', 'MODULES']
