"""Loads an experiment as `train.py` does, every mistake a `ConfigError`.

Model Garden's parsing reports a misspelled key as a `KeyError` naming a
class path, a missing file as a `NotFoundError`, bad YAML and failed
validation as whatever its libraries raise. Here each becomes one
`ConfigError` that says what to change; anything else (a bug) passes
through with its traceback.
"""

import contextlib
import dataclasses
import difflib
import importlib
import re
from typing import Iterator, Optional, Sequence

import tensorflow as tf
import yaml
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import train_utils
from official.modeling import hyperparams

from groie_tf.errors import ConfigError
from groie_tf.errors import UserError


def _unknown_key_message(error: KeyError) -> Optional[str]:
  """Model Garden's strict-override KeyError, with the keys it could be."""
  found = re.search(r"The key '([^']+)' does not exist in <class '([\w.]+)'>",
                    str(error))
  if not found:
    return None
  key, class_path = found.groups()
  module_name, _, class_name = class_path.rpartition('.')
  try:
    config_class = getattr(importlib.import_module(module_name), class_name)
    keys = sorted(field.name for field in dataclasses.fields(config_class))
  except (ImportError, AttributeError, TypeError):
    keys = []
  return (f'Unknown config key {key!r} in {class_name}.{_hint(key, keys)} '
          f'Its keys: {", ".join(keys)}.')


def _hint(name: str, choices: Sequence[str]) -> str:
  """' Did you mean ...?' for the closest of `choices`, or ''."""
  close = difflib.get_close_matches(name, choices, n=1)
  return f' Did you mean {close[0]!r}?' if close else ''


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
  """Turns Model Garden's parsing and validation errors into ConfigError.

  For code that only reads and validates configs: a ValueError raised
  there is about the config.
  """
  try:
    yield
  except UserError:
    raise
  except KeyError as error:
    message = _unknown_key_message(error)
    if message is None:
      raise
    raise ConfigError(message) from error
  except (FileNotFoundError, tf.errors.NotFoundError) as error:
    raise ConfigError(f'File not found: {error}') from error
  except yaml.YAMLError as error:
    raise ConfigError(f'Bad YAML: {error}') from error
  except ValueError as error:  # Model Garden's type checks and validation
    raise ConfigError(str(error)) from error


def check_experiment(name: str) -> None:
  """Raises ConfigError unless `name` is a registered experiment."""
  names = sorted(exp_factory._REGISTERED_CONFIGS)  # pylint: disable=protected-access
  if name not in names:
    raise ConfigError(f'Unknown experiment {name!r}.{_hint(name, names)} '
                      f'Registered: {", ".join(names)}.')


def load_experiment(name: str, config_files: Sequence[str] = (),
                    params_override: str = '') -> cfg.ExperimentConfig:
  """A registered experiment with training's overrides, validated.

  The same steps as `train.py` (Model Garden's `parse_configuration`):
  YAML files in order, then `params_override`, all strict.
  """
  with config_errors():
    check_experiment(name)
    params = exp_factory.get_exp_config(name)
  return overridden(params, config_files, params_override)


def overridden(params: cfg.ExperimentConfig, config_files: Sequence[str] = (),
               params_override: str = '') -> cfg.ExperimentConfig:
  """`params` with YAML files in order, then `params_override`, all strict,
  validated."""
  with config_errors():
    for config_file in config_files:
      params = hyperparams.override_params_dict(params, config_file,
                                                is_strict=True)
    if params_override:
      params = hyperparams.override_params_dict(params, params_override,
                                                is_strict=True)
    params.validate()
  return params


def load_experiment_from_flags(flags_obj) -> cfg.ExperimentConfig:
  """Model Garden's `parse_configuration` of its training flags
  (`--experiment`, `--config_file`, `--params_override`, `--tpu`, ...),
  validated and locked."""
  with config_errors():
    check_experiment(flags_obj.experiment)
    return train_utils.parse_configuration(flags_obj, print_return=False)
