"""A run's report: ``report.md`` with PNG figures, readable on GitHub.

The figures are the paper's views of a before/after comparison on the test split:
confusion matrices with TPR/TNR (Table 4), ROC curves with AUC (Fig. 7), score
distributions per class (Figs. 6 and 8), the learned noise (Fig. 3b) and samples
misclassified before and right after, beside their perturbed versions (Fig. 5).
"""
import dataclasses
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

from dfm import metrics, tables  # noqa: E402
from dfm.evaluate import Scores  # noqa: E402

MAX_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class Samples:
  """Test images misclassified before and right after: originals and perturbed."""

  images: np.ndarray
  perturbed: np.ndarray
  labels: np.ndarray
  before: np.ndarray
  after: np.ndarray


def mean_ssim(images: np.ndarray, perturbed: np.ndarray) -> float:
  """Mean SSIM (Wang et al. 2004) over image pairs, as scikit-image computes it by
  default: 7x7 uniform windows, data range 1, channels averaged.

  Example::

    mean_ssim(images, images)  # 1.0: nothing changed
  """
  return float(np.mean([
      structural_similarity(a, b, data_range=1.0, channel_axis=-1)
      for a, b in zip(images, perturbed)]))


def _roc(scores: Scores, num_classes: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """The binary ROC (class 1 positive) or, multi-class, the micro one-vs-rest ROC,
  and the AUC of each class against the rest."""
  one_hot = np.eye(num_classes, dtype=bool)[scores.labels]
  per_class = [
      metrics.area_under_curve(*metrics.roc_curve(one_hot[:, c], scores.probabilities[:, c]))
      for c in range(num_classes)]
  if num_classes == 2:
    return *metrics.roc_curve(one_hot[:, 1], scores.probabilities[:, 1]), per_class
  return *metrics.roc_curve(one_hot.ravel(), scores.probabilities.ravel()), per_class


def _plot_roc(rocs: dict[str, tuple], num_classes: int, path: Path) -> dict[str, float]:
  """Plots the ``{"before", "after"}`` curves of :func:`_roc`; returns their AUCs."""
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


def append_queries(workdir: Path, queries: dict[str, Any]) -> None:
  """Adds the query ledger and the accuracy-against-queries curve to ``report.md``."""
  rows = [[name, *(queries[part][name] for part in ("fit", "total"))]
          for name in ("calls", "images", "failures")]
  chosen = queries["chosen"]
  budget = ", ".join(f"{k} {v}" for k, v in queries["budget"].items() if v) or "none"
  text = (f"\n## Queries\n\nBudget: {budget}. The chosen noise was scored on validation after "
          f"batch {chosen['batch']}, {chosen['images']} images into the run "
          f"({100 * chosen['val_accuracy']:.1f}% val; batch 0 is no noise).\n\n"
          + tables.markdown_table(
              ["counted", "to fit and select", "with the final evaluation"], rows)
          + "\n\n![validation accuracy against queries](queries.png)\n"
          "Every point: `queries.csv`.\n")
  with (workdir / "report.md").open("a") as report:
    report.write(text)

def _plot_scores(before: Scores, after: Scores, class_names: list[str], path: Path) -> None:
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


def _plot_samples(samples: Samples, class_names: list[str], path: Path) -> None:
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


def _confusion_table(scores: Scores, class_names: list[str]) -> str:
  """Rows: true class; cells: % of the row predicted as each class."""
  confusion = metrics.confusion_matrix(scores.labels, scores.predictions, len(class_names))
  percent = 100 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  lines = ["| true \\ predicted | " + " | ".join(class_names) + " |",
           "|---" * (len(class_names) + 1) + "|"]
  lines += [f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + " |"
            for name, row in zip(class_names, percent)]
  if len(class_names) == 2:
    rates = {k: "n/a" if v is None else f"{100 * v:.2f}%"
             for k, v in metrics.rates(confusion).items()}
    lines.append(f"\nTPR ({class_names[1]}) {rates['tpr']}, TNR ({class_names[0]}) {rates['tnr']}")
  return "\n".join(lines)


def write_report(workdir: Path, *, title: str, class_names: list[str], before: Scores,
                 after: Scores, samples: Samples, appearance: dict[str, float] | None,
                 has_noise: bool) -> Path:
  """Writes ``report.md``, ``roc.png``, ``scores.png``, ``corrected.png`` into ``workdir``.

  ``appearance`` holds PSNR and SSIM between the test images and their perturbed
  versions (``None`` when the images are not perturbed); ``has_noise`` links the
  run's ``noise.png``. Returns the report's path.
  """
  num_classes = len(class_names)
  rocs = {"before": _roc(before, num_classes), "after": _roc(after, num_classes)}
  aucs = _plot_roc(rocs, num_classes, workdir / "roc.png")
  _plot_scores(before, after, class_names, workdir / "scores.png")
  accuracy = {name: 100 * float(np.mean(s.predictions == s.labels))
              for name, s in (("before", before), ("after", after))}
  lines = [f"# {title}", "",
           f"Test split, {len(before.labels)} examples.", "",
           "| | before | after |", "|---|---|---|",
           f"| accuracy (%) | {accuracy['before']:.2f} | {accuracy['after']:.2f} |",
           f"| ROC AUC | {aucs['before']:.4f} | {aucs['after']:.4f} |"]
  if appearance:
    lines += [f"| PSNR (dB), image vs perturbed | | {appearance['psnr_db']:.2f} |",
              f"| SSIM, image vs perturbed ({appearance['ssim_images']} images) | | "
              f"{appearance['ssim']:.4f} |"]
  for name, scores in (("Before", before), ("After", after)):
    lines += ["", f"## Confusion matrix, {name.lower()} (% of each true class)", "",
              _confusion_table(scores, class_names)]
  lines += ["", "## ROC", "", "![ROC before and after](roc.png)"]
  if num_classes > 2:
    per_class = zip(class_names, rocs["before"][2], rocs["after"][2])
    lines += ["", "| class | AUC before | AUC after |", "|---|---|---|"]
    lines += [f"| {name} | {b:.4f} | {a:.4f} |" for name, b, a in per_class]
  lines += ["", "## Score distributions", "", "![scores before and after](scores.png)"]
  if has_noise:
    lines += ["", "## The learned noise", "",
              "Grey is 0; white and black are the largest positive and negative values.", "",
              "![noise](noise.png)"]
  lines += ["", "## Misclassified before, right after", ""]
  if len(samples.labels):
    _plot_samples(samples, class_names, workdir / "corrected.png")
    lines += ["Top: the test image (true class, and the class predicted before); "
              "bottom: what the classifier sees after.", "", "![corrected samples](corrected.png)"]
  else:
    lines.append("No test image went from wrong to right.")
  path = workdir / "report.md"
  path.write_text("\n".join(lines) + "\n")
  return path
