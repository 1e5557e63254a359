"""A run's progress as it goes: each record the training loop logs, to a listener.

:func:`dfm.run.loop.run_loop` passes every record it logs (a flat dict: ``batch``,
the step's metrics, ``val_accuracy``, ...) to :func:`report`, after that batch's
checkpoint when one is due, so a listener that ends the run (an early-stopping
scheduler) leaves a run that resumes. Without a listener nothing happens. The
listener belongs to the thread (a context variable) that set it.

Example::

  with reporting(lambda record: print(record["batch"], record["val_accuracy"])):
    methods.dft(config, "runs/dft")
"""
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

Listener = Callable[[dict[str, Any]], None]

_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar(
    "dfm_progress_listener", default=None)


@contextlib.contextmanager
def reporting(listener: Listener) -> Iterator[None]:
  """Sends every record :func:`report` gets to ``listener`` inside the ``with``."""
  token = _listener.set(listener)
  try:
    yield
  finally:
    _listener.reset(token)


def report(record: dict[str, Any]) -> None:
  """Passes ``record`` to the listener of :func:`reporting`, if any."""
  listener = _listener.get()
  if listener is not None:
    listener(record)
