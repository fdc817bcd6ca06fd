"""The examples in groie_tf's docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import groie_tf

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(
    groie_tf.__path__, 'groie_tf.'))
# The public layers and ops each show an example.
WITH_EXAMPLES = ['groie_tf.layers.groie', 'groie_tf.layers.generalized_attention',
                 'groie_tf.layers.non_local', 'groie_tf.layers.context_block',
                 'groie_tf.layers.grid_head',
                 'groie_tf.modeling.gc_resnet', 'groie_tf.modeling.resnet',
                 'groie_tf.modeling.mmdetection_layout.fpn',
                 'groie_tf.ops.anchors', 'groie_tf.ops.grid_points',
                 'groie_tf.ops.roi_align',
                 'groie_tf.ops.fpn_levels']


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0, f'{result.failed} example(s) of {name} failed'
  if name in WITH_EXAMPLES:
    assert result.attempted > 0, f'{name} lost its docstring example'


def test_every_listed_module_exists():
  assert set(WITH_EXAMPLES) <= set(MODULES)


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
