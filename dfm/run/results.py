"""The end of every fine-tuning run: before/after metrics, noise files and the report.

DFT, MFT and DFT+MFT all compare a *before* ``(params, noise)`` with an *after*
one on validation and test, and write the same ``metrics.json``::

  {"method", "dataset", "split": "test", "before": {...}, "after": {...},
   "val": {"before": {...}, "after": {...}}}

with accuracy, per-class accuracy and, where images are perturbed, PSNR and SSIM.
"""
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from dfm import data, parallel
from dfm.data.batching import images_to_unit_range
from dfm.data.reading import make_reader
from dfm.report import document as report
from dfm.report import figures, metrics
from dfm.report.scores import Scores, summarize
from dfm.report.tables import write_csv
from dfm.run.evaluate import EvalStep, score_split
from dfm.run.workdir import write_json
from dfm.transform import perturb

# SSIM is computed on host image by image, a batch read at a time: the first this many
# test images.
SSIM_IMAGES = 1000
METHOD_TITLES = {"dft": "DFT", "mft": "MFT", "dft_mft": "DFT+MFT", "probe": "Linear probe",
                 "query_dft": "Query-only DFT"}


def _images(source: Any, indices: Iterable[int]) -> np.ndarray:
  """The images of ``source`` at ``indices`` as they are scored: float32 in [0, 1],
  read back one batch of indices at a time (never the split)."""
  images, _ = make_reader(source)([int(i) for i in indices])
  return images_to_unit_range(images)


def _fixed(before: Scores, after: Scores) -> np.ndarray:
  """Indices of up to ``report.MAX_SAMPLES`` test images wrong before and right after."""
  fixed = (before.predictions != before.labels) & (after.predictions == after.labels)
  return np.flatnonzero(fixed)[:report.MAX_SAMPLES]


def _perturbed_of(noise: Any, transform: str) -> Callable[[np.ndarray], np.ndarray]:
  """``images -> perturb(images, noise)`` (jitted, on host); the images as they are
  when ``noise`` is None."""
  if noise is None:
    return lambda images: images
  compiled = jax.jit(functools.partial(perturb, transform=transform))
  return lambda images: np.asarray(compiled(images, noise))


def _samples(source: Any, before: Scores, after: Scores,
             perturbed_of: Callable[[np.ndarray], np.ndarray]) -> figures.Samples:
  """The test images :func:`_fixed` picks, read back by index, and what the
  classifier sees after."""
  fixed = _fixed(before, after)
  images = _images(source, fixed if len(fixed) else [0])[:len(fixed)]
  return figures.Samples(images, perturbed_of(images), before.labels[fixed],
                         before.predictions[fixed], after.predictions[fixed])


def streamed_ssim(source: Any, perturbed_of: Callable[[np.ndarray], np.ndarray], *,
                  count: int, batch_size: int) -> float:
  """Mean SSIM of the first ``count`` images of ``source`` and ``perturbed_of(images)``,
  read ``batch_size`` at a time: memory of one batch, whatever the split's size.

  ``mean_k SSIM(X_k, Z_k)`` over ``k < count``, :func:`dfm.report.metrics.mean_ssim`'s
  figure for the same images held at once.

  Example::

    streamed_ssim(sources["test"], lambda x: perturb(x, noise), count=1000, batch_size=800)
  """
  values = []
  for start in range(0, count, batch_size):
    images = _images(source, range(start, min(start + batch_size, count)))
    values += metrics.ssim_values(images, perturbed_of(images))
  return float(np.mean(values))


def draws_figures(config: ml_collections.ConfigDict) -> bool:
  """Whether a run draws its PNG figures: ``config.figures``, True unless set False
  (configs made before the field existed draw them)."""
  return config.get("figures", True)


def _appearance(workdir: Path, source: Any, config: ml_collections.ConfigDict, noise: Any,
                transform: str, psnr: float) -> dict[str, Any]:
  """Writes ``noise.npy`` and ``noise.png`` (:func:`draws_figures`); returns the report's
  appearance figures: the split's PSNR and the mean SSIM of its first
  :data:`SSIM_IMAGES` images."""
  image_shape = _images(source, [0]).shape[1:]
  np.save(workdir / "noise.npy", noise)
  if draws_figures(config):
    figures.save_noise_png(noise, workdir / "noise.png", transform=transform,
                           image_shape=image_shape)
  count = min(SSIM_IMAGES, len(source))
  ssim = streamed_ssim(source, _perturbed_of(noise, transform), count=count,
                       batch_size=config.eval_batch_size)
  return {"psnr_db": psnr, "ssim_images": count, "ssim": ssim,
          "ssim_settings": metrics.describe_ssim(image_shape)}


def write_results(workdir: Path, config: ml_collections.ConfigDict, *, method: str, dataset: str,
                  eval_step: EvalStep, transform: str, before: tuple[Any, Any],
                  after: tuple[Any, Any], sources: dict[str, Any],
                  extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
  """Evaluates ``before`` and ``after`` = ``(params, noise or None)``; writes the results.

  ``eval_step`` scores the images (:func:`dfm.run.evaluate.make_eval_step`, or a
  black box's); ``transform`` renders the perturbed samples; ``extra()``, called
  once the splits are scored, joins ``metrics.json`` (e.g. the query ledger with
  the final evaluation's queries). Writes ``metrics.json`` once, ``report.md``
  with its figures and, when ``after`` has a noise, ``noise.npy`` and
  ``noise.png``. Prints one line; returns the metrics. Multi-host: process 0 does
  all that (its arrays are its own), the others return ``{}`` at once.
  """
  if not parallel.is_main_process():
    return {}
  noise = None if after[1] is None else np.asarray(jax.device_get(after[1]))
  num_classes = config.model.num_classes
  results: dict[str, Any] = {"method": method, "dataset": dataset, "split": "test"}
  scores = {}
  for split in ("test", "validation"):
    scores[split] = {
        name: score_split(eval_step, params, state_noise, sources[split], config)
        for name, (params, state_noise) in (("before", before), ("after", (after[0], noise)))}
    summary = {
        name: summarize(s, num_classes=num_classes, perturbed=name == "after" and noise is not None)
        for name, s in scores[split].items()}
    if split == "test":
      results.update(summary)
    else:
      results["val"] = summary
  test = scores["test"]
  appearance = None
  if noise is not None:
    appearance = _appearance(workdir, sources["test"], config, noise, transform,
                             results["after"]["psnr_db"])
    results["after"]["ssim"] = appearance["ssim"]
  head = {key: results.pop(key) for key in ("method", "dataset", "split")}
  results = {**head, **(extra() if extra is not None else {}), **results}
  write_json(workdir / "metrics.json", results)
  with_figures = draws_figures(config)
  samples = (_samples(sources["test"], test["before"], test["after"], _perturbed_of(noise, transform))
             if with_figures else None)
  report.write_report(
      workdir, title=f"{METHOD_TITLES[method]} on {dataset}",
      class_names=data.class_names_of(sources["test"]), before=test["before"], after=test["after"],
      samples=samples, appearance=appearance, has_noise=noise is not None,
      with_figures=with_figures)
  _print_summary(results, workdir)
  return results


def _print_summary(results: dict[str, Any], workdir: Path) -> None:
  """Prints the run's line: accuracy before -> after at its PSNR, or "perturbed images
  identical (N = 0)" when :func:`dfm.report.metrics.is_identical`."""
  before, after = results["before"]["accuracy"], results["after"]["accuracy"]
  psnr = ""
  if "psnr_db" in results["after"]:
    value = results["after"]["psnr_db"]
    psnr = (f", perturbed images {metrics.IDENTICAL}" if metrics.is_identical(value)
            else f" at PSNR {metrics.format_psnr(value)}")
  val = results["val"]
  print(f"{METHOD_TITLES[results['method']]} on {results['dataset']} test: accuracy "
        f"{100 * before:.1f}% -> {100 * after:.1f}% ({100 * (after - before):+.1f} points){psnr}; "
        f"val {100 * val['before']['accuracy']:.1f}% -> {100 * val['after']['accuracy']:.1f}%. "
        f"Outputs: {workdir}")


CURVE_FIELDS = ("batch", "queries_images", "queries_calls", "val_accuracy", "best_val_accuracy")


def write_query_curve(run_dir: Path, records: list[dict[str, Any]], *,
                      with_figures: bool = True) -> list[dict[str, float]]:
  """Validation accuracy against queries spent, from the query phase's own records.

  Writes ``queries.csv`` (columns :data:`CURVE_FIELDS`) and, ``with_figures``,
  ``queries.png``; returns the rows.
  """
  rows = [{field: record[field] for field in CURVE_FIELDS}
          for record in records if "val_accuracy" in record]
  write_csv(run_dir / "queries.csv", CURVE_FIELDS,
            [[row[field] for field in CURVE_FIELDS] for row in rows])
  if with_figures:
    figures.save_queries_png(rows, run_dir / "queries.png")
  return rows
