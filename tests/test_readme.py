"""The README's commands and CI stay what the project promises."""

import os
import pathlib
import re
import shutil
import subprocess

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


_FAKE_TOOL = """#!/usr/bin/env bash
# Stands in for {name}: fails where $FAIL names this step, else succeeds.
echo "{name} $*" >> "$CALLS"
case "{name} $*" in
  'python3 -m venv .venv') step=venv; mkdir -p .venv/bin;
                           : > .venv/bin/activate ;;
  pip*) step=pip ;;
  'python -m pytest'*'-m not slow') step=fast_tests ;;
  'python -m pytest'*'-m slow') step=slow_tests ;;
  bazel*) step=bazel ;;
  *) step=other ;;
esac
[ "$step" != "$FAIL" ]
"""


@pytest.mark.parametrize('failing_step', ['venv', 'pip', 'fast_tests',
                                          'slow_tests', 'bazel', None])
def test_ci_fails_when_any_step_of_the_test_command_fails(tmp_path,
                                                          failing_step):
  """.ci/run with fake tools: a failure anywhere fails CI, and Bazel does
  not run after a failed install or test."""
  (tmp_path / '.ci').mkdir()
  shutil.copy(ROOT / '.ci' / 'run', tmp_path / '.ci' / 'run')
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in ('python3', 'python', 'pip', 'bazel'):
    tool = bin_dir / name
    tool.write_text(_FAKE_TOOL.format(name=name))
    tool.chmod(0o755)
  calls = tmp_path / 'calls'
  result = subprocess.run(
      ['bash', str(tmp_path / '.ci' / 'run')], capture_output=True, text=True,
      timeout=60, env=dict(os.environ, PATH=f'{bin_dir}:/usr/bin:/bin',
                           CALLS=str(calls), FAIL=str(failing_step)))
  ran = calls.read_text().splitlines()
  if failing_step is None:
    assert result.returncode == 0, result.stderr
    assert ('bazel test --nocache_test_results --test_tag_filters=-slow '
            '//:all') in ran
  else:
    assert result.returncode != 0, ran
    assert any(line.startswith('bazel') for line in ran) == (
        failing_step == 'bazel'), ran


def test_every_test_file_is_a_bazel_target_that_runs_pytest():
  """A test file missing from BUILD, or without its `__main__` call of
  pytest, would pass under Bazel without running a single test."""
  build = (ROOT / 'BUILD').read_text(encoding='utf-8')
  targets = set(re.findall(r'\("(test_\w+)", "\w+",', build))
  files = sorted((ROOT / 'tests').glob('test_*.py'))
  assert targets == {f.stem for f in files}
  for path in files:
    assert 'pytest.main([__file__' in path.read_text(encoding='utf-8'), path


def test_bazel_tags_slow_exactly_the_files_pytest_marks_slow():
  """CI runs the slow targets under pytest only: the two lists must agree."""
  build = (ROOT / 'BUILD').read_text(encoding='utf-8')
  tagged = set(re.findall(r'\("(test_\w+)", "\w+",[^(]*?\["slow"\]\),',
                          build, re.S))
  marked = {path.stem for path in (ROOT / 'tests').glob('test_*.py')
            if re.search(r'^pytestmark = pytest\.mark\.slow$',
                         path.read_text(encoding='utf-8'), re.M)}
  assert tagged == marked and marked


def test_bazel_gives_the_mmdetection_fixtures_to_every_file_reading_them():
  """Bazel's sandbox holds only declared data: a test file that opens
  tests/fixtures/mmdet (through tests/mmdet_stages.py, which locates them)
  without `:mmdet_fixtures` fails under Bazel alone."""
  build = (ROOT / 'BUILD').read_text(encoding='utf-8')
  given = set(re.findall(r'\("(test_\w+)", "\w+", \[[^]]*":mmdet_fixtures"',
                         build))
  readers = {path.stem for path in (ROOT / 'tests').glob('test_*.py')
             if re.search(r'^from tests import mmdet_stages$',
                          path.read_text(encoding='utf-8'), re.M)}
  assert given == readers and readers


def test_no_tensorflow_addons_anywhere():
  setup = (ROOT / 'setup.py').read_text(encoding='utf-8')
  assert 'tensorflow-addons' not in setup.split('install_requires')[1]
  readme = ' '.join((ROOT / 'README.md').read_text(encoding='utf-8').split())
  assert 'tensorflow-addons is not used' in readme


if __name__ == '__main__':
  raise SystemExit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
