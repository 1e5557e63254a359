"""The end of every fine-tuning run: before/after metrics, noise files and the report.

DFT, MFT and DFT+MFT all compare a *before* ``(params, noise)`` with an *after*
one on validation and test, and write the same ``metrics.json``::

  {"method", "dataset", "split": "test", "before": {...}, "after": {...},
   "val": {"before": {...}, "after": {...}}}

with accuracy, per-class accuracy and, where images are perturbed, PSNR and SSIM.
"""
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from dfm import data, parallel
from dfm.report import document as report
from dfm.report import figures, metrics
from dfm.report.scores import Scores, summarize
from dfm.report.tables import write_csv
from dfm.run.evaluate import EvalStep, score_split
from dfm.run.workdir import write_json
from dfm.transform import perturb

# SSIM is computed on host image by image: the first this many test images.
SSIM_IMAGES = 1000
METHOD_TITLES = {"dft": "DFT", "mft": "MFT", "dft_mft": "DFT+MFT", "query_dft": "Query-only DFT"}


def _test_images(source, config, limit: int) -> np.ndarray:
  """The first ``limit`` test images, in the order they are scored."""
  images = []
  for batch in data.iterate_eval_batches(source, batch_size=config.eval_batch_size):
    images.append(np.asarray(batch["image"])[np.asarray(batch["mask"]) > 0])
    if sum(map(len, images)) >= limit:
      break
  return np.concatenate(images)[:limit]


def _fixed(before: Scores, after: Scores) -> np.ndarray:
  """Indices of up to ``report.MAX_SAMPLES`` test images wrong before and right after."""
  fixed = (before.predictions != before.labels) & (after.predictions == after.labels)
  return np.flatnonzero(fixed)[:report.MAX_SAMPLES]


def _samples(before: Scores, after: Scores, fixed: np.ndarray, images: np.ndarray,
             perturbed: np.ndarray) -> figures.Samples:
  return figures.Samples(images[fixed], perturbed[fixed], before.labels[fixed],
                        before.predictions[fixed], after.predictions[fixed])


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
  fixed = _fixed(test["before"], test["after"])
  num_images = max(SSIM_IMAGES if noise is not None else 0, int(fixed.max(initial=-1)) + 1, 1)
  images = _test_images(sources["test"], config, num_images)
  perturbed = images if noise is None else np.asarray(
      jax.jit(functools.partial(perturb, transform=transform))(images, noise))
  appearance = None
  if noise is not None:
    np.save(workdir / "noise.npy", noise)
    figures.save_noise_png(noise, workdir / "noise.png", transform=transform,
                           image_shape=images.shape[1:])
    count = min(SSIM_IMAGES, len(images))
    appearance = {"psnr_db": results["after"]["psnr_db"], "ssim_images": count,
                  "ssim": metrics.mean_ssim(images[:count], perturbed[:count]),
                  "ssim_settings": metrics.describe_ssim(images.shape[1:])}
    results["after"]["ssim"] = appearance["ssim"]
  head = {key: results.pop(key) for key in ("method", "dataset", "split")}
  results = {**head, **(extra() if extra is not None else {}), **results}
  write_json(workdir / "metrics.json", results)
  report.write_report(
      workdir, title=f"{METHOD_TITLES[method]} on {dataset}",
      class_names=data.class_names_of(sources["test"]), before=test["before"], after=test["after"],
      samples=_samples(test["before"], test["after"], fixed, images, perturbed),
      appearance=appearance, has_noise=noise is not None)
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


def write_query_curve(run_dir: Path, records: list[dict[str, Any]]) -> list[dict[str, float]]:
  """Validation accuracy against queries spent, from the query phase's own records.

  Writes ``queries.csv`` (columns :data:`CURVE_FIELDS`) and ``queries.png``;
  returns the rows.
  """
  rows = [{field: record[field] for field in CURVE_FIELDS}
          for record in records if "val_accuracy" in record]
  write_csv(run_dir / "queries.csv", CURVE_FIELDS,
            [[row[field] for field in CURVE_FIELDS] for row in rows])
  figures.save_queries_png(rows, run_dir / "queries.png")
  return rows
