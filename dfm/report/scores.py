"""Every example of a split, scored: the arrays the metrics, tables and figures read."""
import dataclasses
from typing import Any

import numpy as np

from dfm.report import metrics


@dataclasses.dataclass(frozen=True)
class Scores:
  """Every example of a split, scored: ``labels[n]``, ``probabilities[n, class]``."""

  labels: np.ndarray
  probabilities: np.ndarray
  squared_error_sum: float
  num_values: int

  @property
  def predictions(self) -> np.ndarray:
    """The most probable class of each example."""
    return self.probabilities.argmax(axis=-1)


def summarize(scores: Scores, *, num_classes: int, perturbed: bool) -> dict[str, Any]:
  """``{"accuracy", "per_class_accuracy", "num_examples"}`` (+ ``"psnr_db"`` if perturbed)."""
  confusion = metrics.confusion_matrix(scores.labels, scores.predictions, num_classes)
  report = {
      "accuracy": metrics.accuracy(confusion),
      "per_class_accuracy": metrics.per_class_accuracy(confusion),
      "num_examples": int(confusion.sum()),
  }
  if perturbed:
    report["psnr_db"] = metrics.psnr_db(scores.squared_error_sum, scores.num_values)
  return report


def roc_of(scores: Scores, num_classes: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """The binary ROC (class 1 positive) or, multi-class, the micro one-vs-rest ROC,
  and the AUC of each class against the rest."""
  one_hot = np.eye(num_classes, dtype=bool)[scores.labels]
  per_class = [
      metrics.area_under_curve(*metrics.roc_curve(one_hot[:, c], scores.probabilities[:, c]))
      for c in range(num_classes)]
  if num_classes == 2:
    return *metrics.roc_curve(one_hot[:, 1], scores.probabilities[:, 1]), per_class
  return *metrics.roc_curve(one_hot.ravel(), scores.probabilities.ravel()), per_class


