"""The exceptions that mean "the user can fix this".

Validation, data checks and the command-line tools raise a `UserError`
subclass with a message that says what to change; `groie_tf.cli` prints it
as one `error:` line and exits with status 2. Every other exception is a
bug, here or in a library, and keeps its traceback. `UserError` is a
`ValueError`, so code that catches Model Garden's validation errors
catches these too.
"""


class UserError(ValueError):
  """An error whose message says what the user should change."""


class ConfigError(UserError):
  """An experiment name, config file, override or config value that cannot
  be used (`groie_tf.configs.loading` turns Model Garden's into it)."""


class DataError(UserError):
  """Data that is missing, does not match its annotation file, or does not
  decode; when training stopped on it, the message says which checkpoint
  holds the last completed step."""


class CheckpointError(UserError):
  """A checkpoint, export or SavedModel that is missing or does not fit
  the experiment."""
