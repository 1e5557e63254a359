"""Evaluation metrics on host arrays: accuracy, per-class accuracy, confusion, PSNR."""
import math

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``.

  Example::

    confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)  # [[1, 0], [1, 1]]
  """
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def accuracy(confusion: np.ndarray) -> float:
  """Fraction of examples on the diagonal of a confusion matrix."""
  return float(np.trace(confusion) / max(confusion.sum(), 1))


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
  """Recall of each true class, ``C[i, i] / sum_j C[i, j]`` (None for an absent class)."""
  totals = confusion.sum(axis=1)
  return [float(confusion[i, i] / n) if n else None for i, n in enumerate(totals)]


def psnr_db(squared_error_sum: float, num_values: int, peak: float = 1.0) -> float:
  """PSNR between originals and perturbed images over a whole split, in dB.

  ``PSNR = 10 log10(peak^2 / MSE)`` with ``MSE`` the mean squared pixel difference
  over all ``num_values`` pixels of the split; ``inf`` when nothing changed.

  Example::

    psnr_db(squared_error_sum=0.01 * 100, num_values=100)  # MSE 0.01 -> 20 dB
  """
  mse = squared_error_sum / max(num_values, 1)
  return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)
