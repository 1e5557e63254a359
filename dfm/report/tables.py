"""Result tables over seeds: mean +- std, markdown for README/GitHub, CSV for plotting."""
import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (``ddof=1``; 0 for a single value).

  Example::

    mean_std([0.8, 0.9])  # (0.85, 0.0707...)
  """
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def format_mean_std(values: Sequence[float], *, scale: float = 1.0, digits: int = 1) -> str:
  """``"85.2 +- 1.0"`` of ``scale * values``; the value alone when there is one, and
  ``"-"`` when there are none."""
  finite = [v for v in values if v is not None and math.isfinite(v)]
  if not finite:
    return "-"
  mean, std = mean_std(finite)
  if len(finite) == 1:
    return f"{scale * mean:.{digits}f}"
  return f"{scale * mean:.{digits}f} +- {scale * std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
  """Writes ``rows`` under ``header`` as CSV."""
  with path.open("w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(header)
    writer.writerows(rows)
