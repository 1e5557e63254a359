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


# PSNR at or above this counts as "the perturbed images are the originals".
IDENTICAL_PSNR_DB = 100.0
IDENTICAL = "identical (N = 0)"


def is_identical(psnr: float) -> bool:
  """Whether a PSNR (:func:`psnr_db`, peak 1) says nothing changed: ``PSNR >= 100 dB``.

  That is ``MSE <= 1e-10``, an RMS difference of at most ``1e-5`` of the pixel range,
  about 1/400 of one 8-bit grey level: only float rounding gets there. An ``N = 0``
  under the tanh transform gives a squared error of exactly 0 (PSNR ``inf``) or, through
  the float32 rounding of ``tanh(atanh(2X - 1))``, about 125-155 dB; rounding a
  perturbed image to 8 bits alone would already cost it about 59 dB. NaN is not
  identical.

  Example::

    is_identical(math.inf), is_identical(153.1), is_identical(23.6)  # True, True, False
  """
  return psnr >= IDENTICAL_PSNR_DB


def format_psnr(psnr: float, *, digits: int = 1, unit: str = " dB") -> str:
  """``"23.6 dB"``, or ``"identical (N = 0)"`` when :func:`is_identical`.

  Example::

    format_psnr(23.61), format_psnr(153.12, digits=2, unit="")  # "23.6 dB", "identical (N = 0)"
  """
  return IDENTICAL if is_identical(psnr) else f"{psnr:.{digits}f}{unit}"


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


# Wang et al. (2004): an 11x11 Gaussian window of sigma 1.5 (skimage's 11 taps, truncated
# at 3.5 sigma), population covariances; pixels in [0, 1].
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11


def ssim_options(image_shape: tuple[int, ...]) -> dict:
  """The :func:`skimage.metrics.structural_similarity` settings for ``(H, W, C)`` images.

  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0``,
  channels last and averaged. The Gaussian always spans 11 taps (reflected at the
  borders); an image narrower than 11 px also gets ``win_size``, the largest odd
  size that fits, which only sets the border skimage crops before averaging.

  Example::

    ssim_options((28, 28, 1))  # no win_size: 11x11, as in Wang et al.
    ssim_options((8, 8, 1))["win_size"]  # 7
  """
  options = {"data_range": 1.0, "channel_axis": -1, "gaussian_weights": True,
             "sigma": SSIM_SIGMA, "use_sample_covariance": False}
  side = min(image_shape[:2])
  if side < SSIM_WINDOW:
    options["win_size"] = side if side % 2 else max(side - 1, 1)
  return options


def describe_ssim(image_shape: tuple[int, ...]) -> str:
  """One line naming the SSIM settings of :func:`ssim_options` for the report.

  Example::

    describe_ssim((28, 28, 1))  # "SSIM as in Wang et al. (2004): 11x11 Gaussian window ..."
  """
  options = ssim_options(image_shape)
  window = (f"{SSIM_WINDOW}x{SSIM_WINDOW}" if "win_size" not in options else
            f"{SSIM_WINDOW}-tap (images of {min(image_shape[:2])} px: border crop "
            f"{options['win_size']}x{options['win_size']})")
  return (f"SSIM as in Wang et al. (2004): {window} Gaussian window, sigma {SSIM_SIGMA}, "
          "population covariances, data range 1, channels averaged "
          "(skimage: `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`).")


def ssim_values(images: np.ndarray, perturbed: np.ndarray) -> list[float]:
  """SSIM of each ``(H, W, C)`` image pair with the settings of Wang et al. (2004):
  an 11x11 Gaussian window of sigma 1.5, population covariances, data range 1,
  channels averaged (:func:`ssim_options`).

  Example::

    ssim_values(images[:2], images[:2])  # [1.0, 1.0]: nothing changed
  """
  options = ssim_options(np.shape(images)[1:])
  return [float(structural_similarity(a, b, **options)) for a, b in zip(images, perturbed)]


def mean_ssim(images: np.ndarray, perturbed: np.ndarray) -> float:
  """Mean of :func:`ssim_values` over the image pairs.

  Example::

    mean_ssim(images, images)  # 1.0: nothing changed
  """
  return float(np.mean(ssim_values(images, perturbed)))
