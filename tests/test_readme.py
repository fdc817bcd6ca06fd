"""The README's commands and CI stay what the project promises."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
  text = (ROOT / 'README.md').read_text(encoding='utf-8')
  return re.findall(r'```sh\n(.*?)\n```', text, re.S)


def test_readme_opens_with_the_main_job_and_the_test_command():
  main_job, tests = readme_commands()[:2]
  assert main_job.startswith('python3 -m venv .venv') and 'pip install' in main_job
  assert 'groie_tf.demo' in main_job or 'train.py' in main_job
  assert tests.startswith('python3 -m venv .venv') and 'pytest' in tests


def test_ci_runs_the_readme_test_command_verbatim():
  tests = readme_commands()[1]
  ci_lines = (ROOT / '.ci' / 'run').read_text(encoding='utf-8').splitlines()
  assert tests in ci_lines
  assert 'set -euo pipefail' in ci_lines  # pytest's exit code 5 fails CI


def test_every_test_file_is_a_bazel_target_that_runs_pytest():
  """A test file missing from BUILD, or without its `__main__` call of
  pytest, would pass under Bazel without running a single test."""
  build = (ROOT / 'BUILD').read_text(encoding='utf-8')
  targets = set(re.findall(r'\("(test_\w+)", "\w+",', build))
  files = sorted((ROOT / 'tests').glob('test_*.py'))
  assert targets == {f.stem for f in files}
  for path in files:
    assert 'pytest.main([__file__' in path.read_text(encoding='utf-8'), path


def test_no_tensorflow_addons_anywhere():
  setup = (ROOT / 'setup.py').read_text(encoding='utf-8')
  assert 'tensorflow-addons' not in setup.split('install_requires')[1]
  readme = ' '.join((ROOT / 'README.md').read_text(encoding='utf-8').split())
  assert 'tensorflow-addons is not used' in readme


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
