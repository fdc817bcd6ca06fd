"""The one exception type that means "the user can fix this".

Validation, data checks and the command-line tools raise `UserError` with
a message that says what to change; `groie_tf.cli` prints it as one
`error:` line and exits with status 2. It is a `ValueError`, so code that
catches Model Garden's validation errors catches ours too.
"""


class UserError(ValueError):
  """An error whose message says what the user should change."""
