"""The errors a user can cause; main.py prints them as one line instead of a traceback."""

from experiments.data import DataError
from experiments.optim import ConfigError
from experiments.train import NonFiniteError
from structured import StructureError

USER_ERRORS = (ConfigError, DataError, NonFiniteError, StructureError)
