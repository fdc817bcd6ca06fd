"""The package's import graph is the house drawn in docs/development.md:
each part imports only parts on floors below it, so nothing low (configs,
layers, ops) depends on anything built on it, and there is no cycle."""

import ast
import pathlib
import sys

import pytest

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'groie_tf'

# Floors, lowest first; a part is a subpackage or a top-level module.
FLOORS = (
    ('errors', 'precision'),
    ('ops',),
    ('data', 'layers'),
    ('configs',),
    ('modeling',),
    ('tasks', 'conversion'),
    ('registry_imports', 'serving', 'analysis'),
    ('stopping', 'runner', 'demo'),
    ('cli',),
    ('training',),
    ('train', 'ablation'),
)
_FLOOR = {part: index for index, parts in enumerate(FLOORS) for part in parts}


def _is_main_block(node: ast.AST) -> bool:
  """`if __name__ == '__main__':`, whose imports serve the module run as a
  script (the checker's command line), not the library."""
  test = getattr(node, 'test', None)
  return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and
          isinstance(test.left, ast.Name) and test.left.id == '__name__')


def _imported_parts(tree: ast.AST):
  """The groie_tf parts a module's code imports, outside its main block."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if _is_main_block(node):
      continue
    stack.extend(ast.iter_child_nodes(node))
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module == 'groie_tf':
      names = [f'groie_tf.{alias.name}' for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module]
    else:
      continue
    for name in names:
      if name.startswith('groie_tf.'):
        yield name.split('.')[1]


def import_edges():
  """{(importing part, imported part)} over every module of the package."""
  edges = set()
  for path in _PACKAGE.rglob('*.py'):
    part = path.relative_to(_PACKAGE).parts[0].removesuffix('.py')
    for imported in _imported_parts(ast.parse(path.read_text())):
      if imported != part:
        edges.add((part, imported))
  return edges


def test_every_part_of_the_package_has_a_floor():
  parts = {path.name.removesuffix('.py') for path in _PACKAGE.iterdir()
           if path.suffix == '.py' or (path / '__init__.py').exists()}
  parts.discard('__init__')
  assert parts == set(_FLOOR)


@pytest.mark.parametrize('edge', sorted(import_edges()),
                         ids=lambda edge: f'{edge[0]}->{edge[1]}')
def test_a_part_imports_only_from_lower_floors(edge):
  part, imported = edge
  assert _FLOOR[imported] < _FLOOR[part], (
      f'groie_tf.{part} (floor {_FLOOR[part]}) imports groie_tf.{imported} '
      f'(floor {_FLOOR[imported]}): an arrow that does not point down')


def test_the_check_sees_an_arrow_up():
  """The parser finds imports of every form, and skips a main block."""
  tree = ast.parse(
      'import groie_tf.training\n'
      'from groie_tf import cli\n'
      'from groie_tf.tasks.grid_rcnn import GridRCNNTask\n'
      'def f():\n'
      '  from groie_tf.serving import export\n'
      "if __name__ == '__main__':\n"
      '  from groie_tf import train\n')
  assert sorted(_imported_parts(tree)) == ['cli', 'serving', 'tasks',
                                           'training']


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
