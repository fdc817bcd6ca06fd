"""A user's mistake on the command line: one message saying what to change,
exit status 2, no traceback (unless --traceback)."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from groie_tf import cli
from groie_tf import registry_imports  # pylint: disable=unused-import
from groie_tf import errors
from groie_tf.configs import loading
from groie_tf.serving import predict

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _message(function, *args):
  with pytest.raises(Exception) as raised:
    function(*args)
  return cli.user_message(raised.value)


def test_an_unknown_experiment_lists_the_registered_ones():
  message = _message(loading.check_experiment, 'groie_maskrcn_shapes')
  assert message.startswith("Unknown experiment 'groie_maskrcn_shapes'. Did "
                            "you mean 'groie_maskrcnn_shapes'? Registered: ")
  assert 'groie_fasterrcnn_resnetfpn_coco' in message
  loading.check_experiment('groie_maskrcnn_shapes')  # no error


def test_a_misspelled_key_names_the_closest_valid_one():
  message = _message(loading.load_experiment, 'groie_maskrcnn_shapes',
                     (), 'task.model.box_groie.agregation=sum')
  assert message.startswith("Unknown config key 'agregation' in GRoIEBlock. "
                            "Did you mean 'aggregation'? Its keys: ")
  assert 'is_strict' not in message  # not a command-line option


def test_a_missing_file_and_bad_yaml_are_named(tmp_path):
  missing = str(tmp_path / 'missing.yaml')
  assert _message(loading.load_experiment, 'groie_maskrcnn_shapes',
                  (missing,)).startswith(f'File not found: {missing}')
  bad = tmp_path / 'bad.yaml'
  bad.write_text('task: {model: [\n')
  message = _message(loading.load_experiment, 'groie_maskrcnn_shapes',
                     (str(bad),))
  assert message.startswith('Bad YAML: ') and str(bad) in message


def test_a_missing_saved_model_is_named(tmp_path):
  missing = str(tmp_path / 'export')
  message = _message(predict.load_detector, missing)
  assert message.startswith(f'No SavedModel in {missing}: ')


def test_steps_per_loop_alone_fails_at_validation_with_both_fields():
  message = _message(loading.load_experiment, 'groie_maskrcnn_shapes',
                     (), 'trainer.steps_per_loop=30')
  assert message == (
      'trainer.summary_interval (50) must be a multiple of '
      'trainer.steps_per_loop (30): set both, for example '
      'trainer.steps_per_loop=30,trainer.summary_interval=30.')
  loading.load_experiment('groie_maskrcnn_shapes', (),
                               'trainer.steps_per_loop=30,'
                               'trainer.summary_interval=30')


def test_config_mistakes_are_config_errors():
  with pytest.raises(errors.ConfigError):
    loading.load_experiment('groie_maskrcnn_shapes', (),
                            'task.model.box_groie.aggregation=mean')
  with pytest.raises(errors.ConfigError):  # Model Garden's KeyError
    loading.load_experiment('groie_maskrcnn_shapes', (),
                            'trainer.train_stepz=9')


def test_bugs_keep_their_traceback():
  """Only a UserError is the user's: a ValueError or OSError raised by a
  bug (a shape mismatch while tracing, say) keeps its traceback."""
  assert cli.user_message(errors.DataError('x')) == 'x'
  assert cli.user_message(ZeroDivisionError('x')) is None
  assert cli.user_message(KeyError('some_key')) is None
  assert cli.user_message(ValueError('Shapes (2, 3) and (3, 2) are '
                                     'incompatible')) is None
  assert cli.user_message(OSError('x')) is None
  assert cli.user_message(tf.errors.InvalidArgumentError(
      None, None, 'indices[6,0] = 4 is not in [0, 4)')) is None


@pytest.mark.parametrize('script, flags', [
    ('train.py', ['--experiment=groie_maskrcn_shapes', '--mode=train',
                  '--model_dir=unused']),
    ('export_saved_model.py', ['--experiment=groie_maskrcnn_shapes',
                               '--params_override=task.modell.num_classes=3',
                               '--checkpoint_path=unused',
                               '--export_dir=unused']),
])
def test_scripts_exit_2_with_one_message_and_traceback_on_request(script,
                                                                   flags):
  def run(*extra):
    return subprocess.run([sys.executable, script, *flags, *extra], cwd=_ROOT,
                          capture_output=True, text=True, timeout=300)

  result = run()
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert 'error: Unknown ' in result.stderr and 'Did you mean' in result.stderr
  assert 'Traceback' in run('--traceback').stderr


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q', '-p', 'no:cacheprovider']))
