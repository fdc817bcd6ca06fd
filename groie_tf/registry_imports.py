"""Imports everything that registers groie_tf experiments and tasks.

Model Garden finds experiments and tasks through registries filled at import
time; `train.py` imports this module to fill them.
"""

# pylint: disable=unused-import
from official.vision import registry_imports as _vision_registry
from groie_tf.configs import experiments
from groie_tf.tasks import grid_rcnn
from groie_tf.tasks import groie_maskrcnn
