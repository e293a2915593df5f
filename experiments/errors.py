"""The errors a user can cause; the CLIs print them as one line instead of a traceback.

A leaf module: every part of experiments/ raises these, and nothing here imports the rest.
"""

from structured import StructureError


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the valid choices."""


class DataError(ValueError):
  """Missing or unusable data; the message says where it was looked for and how to get it."""


class NonFiniteError(FloatingPointError):
  """A NaN/Inf loss or gradient; the message names the step and the first bad tensor."""


class CheckpointError(RuntimeError):
  """Checkpoints that exist but none of which can be read; the message says what to do."""


USER_ERRORS = (CheckpointError, ConfigError, DataError, NonFiniteError, StructureError)
