"""The figures of a run's report: PNG files written next to its results.

The paper's views of a before/after comparison on the test split: ROC curves
(Fig. 7), score distributions one panel per class (Figs. 6 and 8), the learned
noise with its colour scale (Fig. 3b), samples misclassified before and right
after beside their perturbed versions (Fig. 5), and for query-only runs
validation accuracy against queries.
"""
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402

from dfm.report.scores import Scores  # noqa: E402
from dfm.transform import resize_noise  # noqa: E402
from dfm.types import PyTree  # noqa: E402


# What each transform of dfm.transform.TRANSFORMS does with the noise: (how, formula).
TRANSFORM_MEANINGS = {
    "tanh": ("added in arctanh space", "Z = (tanh(atanh(2X - 1) + N) + 1) / 2"),
    "paper_literal": ("added to the pixels inside tanh (Eq. 5 as printed)",
                      "Z = (tanh(X + N) + 1) / 2"),
    "additive_clip": ("added to the pixels, then clipped", "Z = clip(X + N, 0, 1)"),
}
CHANNEL_NAMES = {1: ("",), 3: ("R", "G", "B")}


def noise_title(transform: str | Callable) -> str:
  """Two lines: what the noise ``N`` is under ``transform``, then the formula.

  Example::

    noise_title("tanh")  # "Noise N, added in arctanh space\\nZ = (tanh(atanh(2X - 1) + N) + 1) / 2"
  """
  name = transform if isinstance(transform, str) else getattr(transform, "__name__", "transform")
  how, formula = TRANSFORM_MEANINGS.get(name, (f"applied by {name}", f"Z = {name}(X, N)"))
  return f"Noise N, {how}\n{formula}"


def noise_image(noise: PyTree, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
  """The noise as the images see it: :func:`dfm.transform.resize_noise` to ``(H, W, C)``.

  Without ``image_shape`` the largest leaf's shape is used.

  Example::

    noise_image({"coarse": np.ones((7, 7, 1)), "fine": np.ones((28, 28, 1))}).shape  # (28, 28, 1)
  """
  noise = jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), noise)
  if image_shape is None:
    image_shape = max((leaf.shape for leaf in jax.tree.leaves(noise)),
                      key=lambda shape: shape[0] * shape[1])
  return np.asarray(resize_noise(noise, tuple(image_shape)))


def noise_figure(noise: PyTree, *, transform: str | Callable = "tanh",
                 image_shape: tuple[int, ...] | None = None) -> plt.Figure:
  """The noise, one panel per channel, on a symmetric colour scale with its colour bar.

  White is 0, red and blue the largest positive and negative values (``+-max|N|``);
  the colour bar's label gives the range. An RGB noise also gets its three channels
  as one image, ``0.5 + 0.5 N / max|N|``. The title says what ``N`` does
  (:func:`noise_title`).
  """
  values = noise_image(noise, image_shape)
  channels = values.shape[-1]
  peak = float(np.abs(values).max()) or 1.0
  names = CHANNEL_NAMES.get(channels, tuple(f"channel {c}" for c in range(channels)))
  panels = channels + (channels == 3)
  figure, axes = plt.subplots(1, panels, figsize=(1.2 + 2.2 * panels, 3.2), squeeze=False,
                              layout="constrained")
  axes = axes[0]
  if channels == 3:
    axes[0].imshow(np.clip(0.5 + 0.5 * values / peak, 0, 1))
    axes[0].set_title("RGB", fontsize=9)
  for axis, c in zip(axes[panels - channels:], range(channels)):
    shown = axis.imshow(values[..., c], cmap="RdBu_r", vmin=-peak, vmax=peak)
    axis.set_title(names[c], fontsize=9)
  for axis in axes:
    axis.set_xticks([]), axis.set_yticks([])
  bar = figure.colorbar(shown, ax=list(axes), shrink=0.9)
  bar.set_label(f"N: min {values.min():.3g}, max {values.max():.3g}", fontsize=8)
  bar.ax.tick_params(labelsize=7)
  figure.suptitle(noise_title(transform), fontsize=9)
  return figure


def save_noise_png(noise: PyTree, path: Path, *, transform: str | Callable = "tanh",
                   image_shape: tuple[int, ...] | None = None) -> None:
  """Writes :func:`noise_figure` as a PNG: the noise resized to the images, with a
  colour bar and a title naming the transform.

  Example::

    save_noise_png(np.zeros((28, 28, 1)), Path("noise.png"))
    save_noise_png(np.ones((7, 7, 3)), Path("noise.png"), transform="additive_clip",
                   image_shape=(25, 25, 3))
  """
  figure = noise_figure(noise, transform=transform, image_shape=image_shape)
  figure.savefig(path, dpi=100)
  plt.close(figure)


@dataclasses.dataclass(frozen=True)
class Samples:
  """Test images misclassified before and right after: originals and perturbed."""

  images: np.ndarray
  perturbed: np.ndarray
  labels: np.ndarray
  before: np.ndarray
  after: np.ndarray


def plot_roc(rocs: dict[str, tuple], aucs: dict[str, float], num_classes: int,
             path: Path) -> None:
  """Plots the ``{"before", "after"}`` curves of :func:`dfm.report.scores.roc_of`, each
  labelled with its AUC."""
  figure, axes = plt.subplots(figsize=(4, 4))
  for name, (fpr, tpr, _) in rocs.items():
    axes.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.3f})")
  axes.plot([0, 1], [0, 1], ":", color="grey")
  axes.set(xlabel="false positive rate", ylabel="true positive rate",
           title="ROC" if num_classes == 2 else "ROC, one-vs-rest (micro)")
  axes.legend(loc="lower right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


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


SCORE_COLUMNS = 5
SCORE_BINS = 10


def _half_bars(axis, heights: np.ndarray, edges: np.ndarray, half: int, **style) -> None:
  """One bar per bin, in its left (``half=0``) or right (``half=1``) half: one patch
  in all (a filled step line), cheaper to draw than a rectangle per bar."""
  width = np.diff(edges) / 2
  left = edges[:-1] + half * width
  steps = np.column_stack([left, left + width]).ravel()
  values = np.column_stack([heights, np.zeros_like(heights)]).ravel()[:-1]
  axis.stairs(values, steps, fill=True, **style)


def scores_figure(before: Scores, after: Scores, class_names: list[str]) -> plt.Figure:
  """One panel per true class (up to 5 a row): its examples' P(true class), before and after.

  In each panel every bin of ``[0, 1]`` holds two bars side by side, before (grey)
  and after (blue), the fraction of that class's examples whose probability of
  their true class falls in the bin; the panel's title gives the class, its size
  and the share predicted right before and after. Axes are shared, the legend is
  drawn once.

  Example::

    scores_figure(before, after, ["0", "1"]).axes  # 2 panels
  """
  num_classes = len(class_names)
  columns = min(num_classes, SCORE_COLUMNS)
  rows = math.ceil(num_classes / columns)
  width, height = 0.8 + 2.1 * columns, 0.9 + 1.9 * rows  # inches
  figure, axes = plt.subplots(rows, columns, figsize=(width, height),
                              sharex=True, sharey=True, squeeze=False)
  figure.subplots_adjust(left=0.6 / width, right=1 - 0.2 / width, bottom=0.45 / height,
                         top=1 - 0.75 / height, wspace=0.12, hspace=0.55)
  edges = np.linspace(0, 1, SCORE_BINS + 1)
  for c, axis in enumerate(axes.flat):
    if c >= num_classes:
      axis.set_visible(False)
      continue
    right = []
    for offset, color, (name, scores) in ((0, "0.6", ("before", before)),
                                          (1, "tab:blue", ("after", after))):
      rows_c = scores.labels == c
      values = scores.probabilities[rows_c, c]
      counts, _ = np.histogram(values, bins=edges)
      _half_bars(axis, counts / max(rows_c.sum(), 1), edges, offset, color=color, label=name)
      right.append(100 * float(np.mean(scores.predictions[rows_c] == c)) if rows_c.any() else 0.0)
    label = class_names[c] if len(class_names[c]) <= 16 else class_names[c][:15] + "…"
    axis.set_title(f"{label} (n {int((before.labels == c).sum())})\n"
                   f"right {right[0]:.0f}% → {right[1]:.0f}%", fontsize=8)
    axis.tick_params(labelsize=7)
  axes[0, 0].set(xlim=(0, 1), ylim=(0, 1), xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
  for axis in axes.flat[num_classes - columns:num_classes]:  # the lowest panel of each column
    axis.xaxis.set_tick_params(labelbottom=True)
    axis.set_xlabel("P(true class)", fontsize=8)
  for axis in axes[:, 0]:
    axis.set_ylabel("fraction", fontsize=8)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False)
  return figure


def plot_scores(before: Scores, after: Scores, class_names: list[str], path: Path) -> None:
  """Writes :func:`scores_figure` as a PNG."""
  figure = scores_figure(before, after, class_names)
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


def plot_gain_curves(curves: dict[str, list[list[tuple[int, float]]]], *, before: float,
                     gain: float, budget: int, path: Path) -> None:
  """The share of a reference gain ``(accuracy - before) / gain`` of the noise kept,
  against images scored: per variant the mean over its runs (each a step curve
  ``[(images, accuracy), ...]``) and the range of the runs, on one log-x axis."""
  grid = np.unique(np.geomspace(1_000, budget, 60).astype(int))
  figure, axis = plt.subplots(figsize=(8, 5))
  for name, runs in curves.items():
    shares = np.array([[(_last_before(run, x) - before) / gain for x in grid] for run in runs])
    line, = axis.plot(grid, 100 * shares.mean(axis=0), label=name)
    axis.fill_between(grid, 100 * shares.min(axis=0), 100 * shares.max(axis=0),
                      color=line.get_color(), alpha=0.15)
  axis.axhline(100, color="black", linestyle=":", label="white-box DFT")
  axis.set_xscale("log")
  axis.set_xlabel("images scored (estimates and validation)")
  axis.set_ylabel("share of the white-box test gain (%)")
  axis.legend(fontsize=7, ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _last_before(run: list[tuple[int, float]], images: int) -> float:
  """The accuracy of the noise kept once ``images`` were spent (a step curve)."""
  return [accuracy for spent, accuracy in run if spent <= images][-1]


def plot_label_curve(curve: dict[str, dict[str, list[float]]], *, before: float,
                     all_labels: float, path: Path, title: str) -> None:
  """Test accuracy against labelled images per class (log x): per method the mean over
  seeds and their range; ``curve[method][k]`` the seeds' accuracies, ``k`` a number
  or ``"all"`` (drawn at ``all_labels``, the whole train split's mean per class);
  the frozen classifier as a horizontal line."""
  figure, axis = plt.subplots(figsize=(7, 4.5))
  ticks: dict[float, str] = {}
  for name, points in curve.items():
    xs = [all_labels if k == "all" else float(k) for k in points]
    ticks.update({x: k for x, k in zip(xs, points)})
    accuracies = [100 * np.array(points[k]) for k in points]
    line, = axis.plot(xs, [a.mean() for a in accuracies], marker="o", label=name)
    axis.fill_between(xs, [a.min() for a in accuracies], [a.max() for a in accuracies],
                      color=line.get_color(), alpha=0.15)
  axis.axhline(100 * before, color="black", linestyle=":", label="before (frozen)")
  axis.set_xscale("log")
  axis.set_xticks(list(ticks), list(ticks.values()))
  axis.minorticks_off()
  axis.set_xlabel("labelled target images per class")
  axis.set_ylabel("test accuracy (%)")
  axis.set_title(title, fontsize=9)
  axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
