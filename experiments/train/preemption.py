"""SIGTERM (a cluster's preemption notice) as a flag the training loop polls between steps."""

import signal


class SigtermFlag:
  """Context manager: inside it SIGTERM sets the flag instead of killing the process."""

  def __init__(self):
    self._set = False
    self._previous = None

  def __call__(self) -> bool:
    return self._set

  def _handle(self, signum, frame):
    del signum, frame
    self._set = True

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:   # not the main thread: signals cannot be caught here
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
