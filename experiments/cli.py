"""What every entrypoint shares: turning a bad-input error into a clear message."""
import sys
from collections.abc import Callable

from absl import flags, logging


def main_with_clear_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Wraps an absl ``main`` so that bad input ends the run with its message, no traceback.

  Library logs are shown from WARNING up unless ``--verbosity`` is given; the
  run's own progress is printed.

  Bad input (ValueError, FileNotFoundError, FloatingPointError) already names the
  problem and the fix; a traceback would only bury it.
  """

  def wrapped(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    try:
      main(argv)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
      sys.exit(f"error: {error}")

  return wrapped
