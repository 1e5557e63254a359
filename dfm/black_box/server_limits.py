"""What a local server admits: a token-bucket rate limit and a queue of injected faults.

Example::

  bucket = TokenBucket(rate=50.0)
  bucket.take()             # 0.0: pass now; else the seconds to wait
  faults = FaultQueue(); faults.append("503")
"""
import collections
import threading
import time
from collections.abc import Iterable

FAULTS = ("ok", "500", "503", "429", "timeout", "malformed", "wrong_shape", "wrong_name", "nan",
          "drop")


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


class TokenBucket:
  """``rate`` requests a second, ``burst`` at once; :meth:`take` says how long to wait."""

  def __init__(self, rate: float, burst: float = 1.0) -> None:
    if rate <= 0:
      raise ValueError(f"max_requests_per_s must be positive, got {rate}.")
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
