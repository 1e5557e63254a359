"""A run's report: ``report.md`` with its PNG figures, readable on GitHub.

The paper's views of a before/after comparison on the test split: confusion
matrices with TPR/TNR (Table 4), ROC curves with AUC (Fig. 7), score
distributions (Figs. 6 and 8), the learned noise (Fig. 3b) and corrected samples
(Fig. 5); query-only runs append what the queries cost.
"""
from pathlib import Path
from typing import Any

import numpy as np

from dfm.report import figures, metrics, tables
from dfm.report.figures import Samples
from dfm.report.scores import Scores, roc_of

MAX_SAMPLES = 8


def append_queries(workdir: Path, queries: dict[str, Any], *, with_figures: bool = True) -> None:
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
          + ("\n\n![validation accuracy against queries](queries.png)" if with_figures else "")
          + "\n\nEvery point: `queries.csv`.\n")
  with (workdir / "report.md").open("a") as report:
    report.write(text)


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
                 after: Scores, samples: Samples | None, appearance: dict[str, float] | None,
                 has_noise: bool, with_figures: bool = True) -> Path:
  """Writes ``report.md``, ``roc.png``, ``scores.png``, ``corrected.png`` into ``workdir``.

  ``appearance`` holds PSNR and SSIM between the test images and their perturbed
  versions, and ``"ssim_settings"``, the line of :func:`dfm.report.metrics.describe_ssim`
  written under the table (``None`` when the images are not perturbed). A PSNR that
  :func:`dfm.report.metrics.is_identical` reads ``"identical (N = 0)"``. ``has_noise``
  links the run's ``noise.png``. Without ``with_figures`` (``config.figures=False``, for
  large sweeps) only the tables are written, no PNG, and ``samples`` may be None.
  Returns the report's path.
  """
  num_classes = len(class_names)
  rocs = {"before": roc_of(before, num_classes), "after": roc_of(after, num_classes)}
  aucs = {name: metrics.area_under_curve(fpr, tpr) for name, (fpr, tpr, _) in rocs.items()}
  accuracy = {name: 100 * float(np.mean(s.predictions == s.labels))
              for name, s in (("before", before), ("after", after))}
  lines = [f"# {title}", "",
           f"Test split, {len(before.labels)} examples.", "",
           "| | before | after |", "|---|---|---|",
           f"| accuracy (%) | {accuracy['before']:.2f} | {accuracy['after']:.2f} |",
           f"| ROC AUC | {aucs['before']:.4f} | {aucs['after']:.4f} |"]
  if appearance:
    lines += [f"| PSNR (dB), image vs perturbed | | "
              f"{metrics.format_psnr(appearance['psnr_db'], digits=2, unit='')} |",
              f"| SSIM, image vs perturbed ({appearance['ssim_images']} images) | | "
              f"{appearance['ssim']:.4f} |", ""]
    if metrics.is_identical(appearance["psnr_db"]):
      lines += [f"PSNR: \"{metrics.IDENTICAL}\" means the perturbed images equal the originals "
                f"up to float rounding (PSNR >= {metrics.IDENTICAL_PSNR_DB:.0f} dB, an RMS "
                "difference of at most 1e-5; `metrics.json` keeps the number).", ""]
    lines.append(appearance["ssim_settings"])
  for name, scores in (("Before", before), ("After", after)):
    lines += ["", f"## Confusion matrix, {name.lower()} (% of each true class)", "",
              _confusion_table(scores, class_names)]
  lines += ["", "## ROC"]
  if num_classes > 2:
    per_class = zip(class_names, rocs["before"][2], rocs["after"][2])
    lines += ["", "| class | AUC before | AUC after |", "|---|---|---|"]
    lines += [f"| {name} | {b:.4f} | {a:.4f} |" for name, b, a in per_class]
  if with_figures:
    lines += _figures(workdir, rocs, aucs, before, after, samples, class_names, has_noise)
  else:
    lines += ["", "Figures not drawn (`config.figures=False`)."]
  path = workdir / "report.md"
  path.write_text("\n".join(lines) + "\n")
  return path


def _figures(workdir: Path, rocs: dict[str, tuple], aucs: dict[str, float], before: Scores,
             after: Scores, samples: Samples, class_names: list[str],
             has_noise: bool) -> list[str]:
  """Draws the report's PNGs (all but ``noise.png``, the run's own); returns the lines
  that show them."""
  figures.plot_roc(rocs, aucs, len(class_names), workdir / "roc.png")
  figures.plot_scores(before, after, class_names, workdir / "scores.png")
  lines = ["", "![ROC before and after](roc.png)",
           "", "## Score distributions", "",
           "One panel per true class: the fraction of its test examples at each probability "
           "of the true class, before (grey) and after (blue).", "",
           "![scores before and after](scores.png)"]
  if has_noise:
    lines += ["", "## The learned noise", "",
              "Resized to the images as the transform applies it. White is 0; red and blue "
              "are the largest positive and negative values (see the colour bar).", "",
              "![noise](noise.png)"]
  lines += ["", "## Misclassified before, right after", ""]
  if len(samples.labels):
    figures.plot_samples(samples, class_names, workdir / "corrected.png")
    lines += ["Top: the test image (true class, and the class predicted before); "
              "bottom: what the classifier sees after.", "", "![corrected samples](corrected.png)"]
  else:
    lines.append("No test image went from wrong to right.")
  return lines
