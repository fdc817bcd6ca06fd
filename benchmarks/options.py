"""What each row of the paper's Tables I-IV costs, beside the AP it reached.

Every `configs/paper/table[1-4]_*.yaml` is loaded as training loads it
(over `configs/paper/base_1x_8gpu.yaml`), and its box-branch GRoIE block
becomes the layer, through the same `groie_layer_kwargs` as in training. Each layer runs forward and backward
on the box branch's RoIs (`--layer_rois`); `ratio` is against Model
Garden's stock aligner in the same rounds. float32 without XLA only: the
option's relative cost, not the precision's, is the question here.
"""

import functools
import glob
import os
import re

from official.vision.modeling.layers import roi_aligner

import tensorflow as tf

from benchmarks import flops
from benchmarks import inputs
from benchmarks import layer as layer_section
from groie_tf.configs import groie_maskrcnn
from groie_tf.configs import loading
from groie_tf.layers import GRoIE

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs', 'paper')
BASE = os.path.join(CONFIGS, 'base_1x_8gpu.yaml')
STOCK = 'stock aligner'


def paper_rows():
  """[(name, GRoIE layer kwargs, the paper's box AP)] for Tables I-IV."""
  rows = []
  for path in sorted(glob.glob(os.path.join(CONFIGS, 'table[1-4]_*.yaml'))):
    with open(path) as f:
      header = f.read()
    box_ap = float(re.search(r'^# Paper: ([\d.]+) box AP', header, re.M)[1])
    experiment = re.search(r'^# Experiment: (\S+)', header, re.M)[1]
    config = loading.load_experiment(experiment, [BASE, path])
    kwargs = groie_maskrcnn.groie_layer_kwargs(
        config.task.model.box_groie, config.task.model.roi_aligner.crop_size)
    rows.append((os.path.basename(path)[:-len('.yaml')], kwargs, box_ap))
  return rows


def run(setup, precision):
  if precision != 'float32':
    return []
  features = inputs.fpn_features(setup.batch_size, setup.image_size,
                                 setup.channels, tf.float32)
  boxes = inputs.rois(setup.batch_size, setup.layer_rois, setup.image_size)
  layers = {STOCK: roi_aligner.MultilevelROIAligner(7)}
  box_ap = {STOCK: None}
  for name, kwargs, ap in paper_rows():
    layers[name] = GRoIE(**kwargs)
    box_ap[name] = ap
  functions = {}
  for name, layer in layers.items():
    layer(features, boxes)  # builds the weights outside any tf.function
    functions[name] = tf.function(functools.partial(
        layer_section.forward_and_backward, layer, features, boxes))
  timed = setup.time(functions)
  case = (f'box: {setup.batch_size}x{setup.layer_rois} RoIs, 7x7, '
          f'C={setup.channels}, forward+backward')
  return [{
      'section': 'options', 'case': case, 'variant': name,
      'precision': precision, 'xla': False,
      'median_ms': 1e3 * seconds, 'ratio': seconds / timed[STOCK],
      'gflop': flops.graph_flops(
          functions[name].get_concrete_function().graph) / 1e9,
      'paper_box_ap': box_ap[name],
  } for name, seconds in timed.items()]
