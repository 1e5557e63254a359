"""Evaluation metrics on host arrays: accuracy, per-class accuracy, confusion, ROC,
and the appearance metrics PSNR and SSIM."""
import math

import numpy as np
from skimage.metrics import structural_similarity


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


def roc_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1).

  An example counts as positive when its score is at least the threshold; tied
  scores move together.

  Example::

    roc_curve(np.array([0, 1]), np.array([0.2, 0.9]))  # fpr [0, 0, 1], tpr [0, 1, 1]
  """
  order = np.argsort(-scores, kind="stable")
  positive, ranked = np.asarray(is_positive, bool)[order], np.asarray(scores)[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
  true_positives = np.cumsum(positive)[last_of_tie]
  false_positives = last_of_tie + 1 - true_positives
  fpr = np.r_[0.0, false_positives / max(false_positives[-1], 1)]
  tpr = np.r_[0.0, true_positives / max(true_positives[-1], 1)]
  return fpr, tpr


def area_under_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
  """Area under a ROC curve (trapezoids); 0.5 is chance, 1 a perfect ranking.

  NaN when the curve is undefined: no positive or no negative example (its last
  point is then not (1, 1)).
  """
  if fpr[-1] != 1 or tpr[-1] != 1:
    return math.nan
  return float(np.trapezoid(tpr, fpr))


def rates(confusion: np.ndarray) -> dict[str, float | None]:
  """TPR and TNR of a binary confusion matrix, class 1 positive (the paper's Table 4);
  None for a class without examples."""
  recall = per_class_accuracy(confusion)
  return {"tpr": recall[1], "tnr": recall[0]}


def mean_ssim(images: np.ndarray, perturbed: np.ndarray) -> float:
  """Mean SSIM (Wang et al. 2004) over image pairs, as scikit-image computes it by
  default: 7x7 uniform windows, data range 1, channels averaged.

  Example::

    mean_ssim(images, images)  # 1.0: nothing changed
  """
  return float(np.mean([
      structural_similarity(a, b, data_range=1.0, channel_axis=-1)
      for a, b in zip(images, perturbed)]))
