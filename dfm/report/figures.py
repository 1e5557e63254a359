"""The figures of a run's report: PNG files written next to its results.

The paper's views of a before/after comparison on the test split: ROC curves
(Fig. 7), score distributions per class (Figs. 6 and 8), the learned noise
(Fig. 3b), samples misclassified before and right after beside their perturbed
versions (Fig. 5), and for query-only runs validation accuracy against queries.
"""
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dfm.report import metrics  # noqa: E402
from dfm.report.scores import Scores  # noqa: E402


def save_noise_png(noise: np.ndarray, path: Path, *, scale: int = 8) -> None:
  """Writes the noise as a PNG: grey = 0, white/black = +-max|noise|, upscaled.

  Example::

    save_noise_png(np.zeros((28, 28, 1)), Path("noise.png"))
  """
  noise = np.asarray(noise, np.float32)
  peak = float(np.abs(noise).max()) or 1.0
  pixels = np.round(255 * (0.5 + 0.5 * noise / peak)).astype(np.uint8)
  if pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  image = Image.fromarray(pixels)
  image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


@dataclasses.dataclass(frozen=True)
class Samples:
  """Test images misclassified before and right after: originals and perturbed."""

  images: np.ndarray
  perturbed: np.ndarray
  labels: np.ndarray
  before: np.ndarray
  after: np.ndarray


def plot_roc(rocs: dict[str, tuple], num_classes: int, path: Path) -> dict[str, float]:
  """Plots the ``{"before", "after"}`` curves of :func:`dfm.report.scores.roc_of`; returns their AUCs."""
  figure, axes = plt.subplots(figsize=(4, 4))
  aucs = {}
  for name, (fpr, tpr, _) in rocs.items():
    aucs[name] = metrics.area_under_curve(fpr, tpr)
    axes.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.3f})")
  axes.plot([0, 1], [0, 1], ":", color="grey")
  axes.set(xlabel="false positive rate", ylabel="true positive rate",
           title="ROC" if num_classes == 2 else "ROC, one-vs-rest (micro)")
  axes.legend(loc="lower right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return aucs


def save_queries_png(rows: list[dict[str, float]], path: Path) -> None:
  """Validation accuracy (and the best so far) against images sent to the model."""
  figure, axes = plt.subplots(figsize=(5, 3.2))
  images = [row["queries_images"] for row in rows]
  axes.plot(images, [100 * row["val_accuracy"] for row in rows], ".-", label="validation")
  axes.step(images, [100 * row["best_val_accuracy"] for row in rows], where="post",
            label="best so far (chosen)")
  axes.set_xlabel("images scored by the model (queries)")
  axes.set_ylabel("accuracy (%)")
  axes.legend(loc="lower right")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_scores(before: Scores, after: Scores, class_names: list[str], path: Path) -> None:
  """Binary: P(class 1) per true class. Multi-class: P(true class) per true class."""
  binary = len(class_names) == 2
  figure, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
  bins = np.linspace(0, 1, 21)
  for axis, (name, scores) in zip(axes, (("before", before), ("after", after))):
    for c, class_name in enumerate(class_names):
      rows = scores.labels == c
      values = scores.probabilities[rows, 1 if binary else c]
      axis.hist(values, bins=bins, histtype="step", density=True, label=class_name)
    axis.set(title=name,
             xlabel=f"P({class_names[1]})" if binary else "P(true class)")
  axes[0].set_ylabel("density")
  axes[1].legend(fontsize="small", ncol=1 if binary else 2, title="true class")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_samples(samples: Samples, class_names: list[str], path: Path) -> None:
  count = len(samples.labels)
  figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2), squeeze=False)
  for k in range(count):
    for row, pixels in enumerate((samples.images[k], samples.perturbed[k])):
      axis = axes[row, k]
      axis.imshow(np.clip(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, 0, 1),
                  cmap="gray", vmin=0, vmax=1)
      axis.set_xticks([]), axis.set_yticks([])
    axes[0, k].set_title(f"{class_names[samples.labels[k]]}\nwas {class_names[samples.before[k]]}",
                         fontsize=8)
  axes[0, 0].set_ylabel("original")
  axes[1, 0].set_ylabel("perturbed")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
