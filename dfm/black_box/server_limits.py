"""What a local server admits: body and batch caps, a token-bucket rate limit, whole-second
``Retry-After`` values and a queue of injected faults.

Example::

  bucket = TokenBucket(rate=50.0, burst=4)
  bucket.take()             # 0.0: pass now; else the seconds to wait
  retry_after(0.017)        # "1": HTTP's Retry-After is whole seconds, rounded up
  body_cap([[3, 32, 32]], max_batch=256)   # bytes a 256-image JSON request may take
  faults = FaultQueue(); faults.append("503")
"""
import collections
import math
import threading
import time
from collections.abc import Iterable, Sequence

FAULTS = ("ok", "500", "503", "429", "timeout", "malformed", "wrong_shape", "wrong_name", "nan",
          "drop")
# A JSON number as the client writes it (a float's repr, e.g. -1.2345678901234567e-05) and
# its ", " take at most this many bytes.
BYTES_PER_VALUE = 32
# The JSON around the numbers: names, shapes, datatypes, the outputs asked for, an id.
ENVELOPE_BYTES = 64 * 2**10
# The body cap when an input's non-batch sizes are symbolic, so no cap can be derived.
FALLBACK_BODY_BYTES = 64 * 2**20


class FaultQueue(collections.deque):
  """Fault names, taken one per infer request; appending an unknown name fails at once."""

  def append(self, fault: str) -> None:
    super().append(_known_fault(fault))

  def extend(self, faults: Iterable[str]) -> None:
    super().extend([_known_fault(fault) for fault in faults])


def _known_fault(fault: str) -> str:
  if fault not in FAULTS:
    raise ValueError(f"Unknown fault {fault!r}; inject one of {FAULTS}.")
  return fault


def retry_after(seconds: float) -> str:
  """A ``Retry-After`` header value: whole seconds (HTTP allows no fraction), rounded up, at
  least 1, so a client that waits it never comes back early.

  Example::

    retry_after(0.017), retry_after(2.5)  # ("1", "3")
  """
  return str(max(1, math.ceil(seconds)))


def body_cap(item_shapes: Sequence[Sequence[int | None]], max_batch: int) -> int:
  """The most bytes an infer request's JSON body may take: ``max_batch`` images of every
  input (``item_shapes``: each input's shape without the batch axis) at
  :data:`BYTES_PER_VALUE` bytes a number, plus :data:`ENVELOPE_BYTES`;
  :data:`FALLBACK_BODY_BYTES` if a size is symbolic (None).

  Example::

    body_cap([[3, 4, 4]], max_batch=256)  # 256 * 48 * 32 + 65536 = 458752
  """
  if any(size is None for shape in item_shapes for size in shape):
    return FALLBACK_BODY_BYTES
  values = sum(math.prod(shape) for shape in item_shapes)
  return max_batch * values * BYTES_PER_VALUE + ENVELOPE_BYTES


class TokenBucket:
  """``rate`` requests a second, ``burst`` at once; :meth:`take` says how long to wait.

  The bucket holds up to ``burst`` tokens (full at start) and gains ``rate`` a second;
  a request takes one, or finds none and is told when one will be there.
  """

  def __init__(self, rate: float, burst: float = 1.0) -> None:
    if rate <= 0:
      raise ValueError(f"max_requests_per_s must be positive, got {rate}.")
    if burst < 1:
      raise ValueError(f"burst must be at least 1 (a request takes a whole token), got {burst}.")
    self.rate, self.burst, self.tokens = rate, burst, burst
    self.last = time.monotonic()
    self._lock = threading.Lock()

  def take(self) -> float:
    """0 if a request may pass now (it takes a token), else the seconds until one may."""
    with self._lock:
      now = time.monotonic()
      self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
      self.last = now
      if self.tokens >= 1:
        self.tokens -= 1
        return 0.0
      return (1 - self.tokens) / self.rate
