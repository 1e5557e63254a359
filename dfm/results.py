"""The end of every fine-tuning run: before/after metrics, noise files and the report.

DFT, MFT and DFT+MFT all compare a *before* ``(params, noise)`` with an *after*
one on validation and test, and write the same ``metrics.json``::

  {"method", "dataset", "split": "test", "before": {...}, "after": {...},
   "val": {"before": {...}, "after": {...}}}

with accuracy, per-class accuracy and, where images are perturbed, PSNR and SSIM.
"""
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from dfm import data, report
from dfm.dft import ApplyFn
from dfm.evaluate import Scores, make_eval_step, score, summarize
from dfm.figures import save_noise_png
from dfm.transform import perturb
from dfm.workdir import write_json

# SSIM is computed on host image by image: the first this many test images.
SSIM_IMAGES = 1000
METHOD_TITLES = {"dft": "DFT", "mft": "MFT", "dft_mft": "DFT+MFT"}


def _scores(eval_step, params, noise, source, config) -> Scores:
  return score(eval_step, params, noise,
               data.iterate_eval_batches(source, batch_size=config.eval_batch_size))


def _test_images(source, config, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """The first ``limit`` test images and labels, in the order they are scored."""
  images, labels = [], []
  for batch in data.iterate_eval_batches(source, batch_size=config.eval_batch_size):
    keep = np.asarray(batch["mask"]) > 0
    images.append(np.asarray(batch["image"])[keep])
    labels.append(np.asarray(batch["label"])[keep])
    if sum(map(len, images)) >= limit:
      break
  return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def _samples(before: Scores, after: Scores, source, config, noise, kind: str) -> report.Samples:
  fixed = np.flatnonzero((before.predictions != before.labels) & (after.predictions == after.labels))
  fixed = fixed[:report.MAX_SAMPLES]
  images, _ = _test_images(source, config, int(fixed.max()) + 1 if fixed.size else 1)
  images = images[fixed]
  perturbed = images if noise is None else np.asarray(perturb(images, noise, kind=kind))
  return report.Samples(images, perturbed, before.labels[fixed], before.predictions[fixed],
                        after.predictions[fixed])


def _appearance(test: dict[str, Any], source, config, noise, kind: str) -> dict[str, Any]:
  images, _ = _test_images(source, config, SSIM_IMAGES)
  perturbed = np.asarray(jax.jit(perturb, static_argnames="kind")(images, noise, kind=kind))
  return {"psnr_db": test["after"]["psnr_db"], "ssim": report.mean_ssim(images, perturbed),
          "ssim_images": len(images)}


def write_results(workdir: Path, config: ml_collections.ConfigDict, *, method: str, dataset: str,
                  apply_fn: ApplyFn, kind: str, before: tuple[Any, Any], after: tuple[Any, Any],
                  sources: dict[str, Any]) -> dict[str, Any]:
  """Evaluates ``before`` and ``after`` = ``(params, noise or None)``; writes the results.

  Writes ``metrics.json``, ``report.md`` with its figures and, when ``after`` has
  a noise, ``noise.npy`` and ``noise.png``. Prints one line; returns the metrics.
  """
  eval_step = make_eval_step(apply_fn, kind=kind)
  noise = None if after[1] is None else np.asarray(jax.device_get(after[1]))
  num_classes = config.model.num_classes
  results: dict[str, Any] = {"method": method, "dataset": dataset, "split": "test"}
  scores = {}
  for split in ("test", "validation"):
    scores[split] = {name: _scores(eval_step, params, state_noise, sources[split], config)
                     for name, (params, state_noise) in (("before", before), ("after", (after[0], noise)))}
    summary = {name: summarize(s, num_classes=num_classes, perturbed=name == "after" and noise is not None)
               for name, s in scores[split].items()}
    if split == "test":
      results.update(summary)
    else:
      results["val"] = summary
  appearance = None
  if noise is not None:
    np.save(workdir / "noise.npy", noise)
    save_noise_png(noise, workdir / "noise.png")
    appearance = _appearance(results, sources["test"], config, noise, kind)
    results["after"]["ssim"] = appearance["ssim"]
  write_json(workdir / "metrics.json", results)
  test = scores["test"]
  report.write_report(
      workdir, title=f"{METHOD_TITLES[method]} on {dataset}",
      class_names=data.class_names_of(sources["test"]), before=test["before"], after=test["after"],
      samples=_samples(test["before"], test["after"], sources["test"], config, noise, kind),
      appearance=appearance, has_noise=noise is not None)
  _print_summary(results, workdir)
  return results


def _print_summary(results: dict[str, Any], workdir: Path) -> None:
  before, after = results["before"]["accuracy"], results["after"]["accuracy"]
  psnr = f" at PSNR {results['after']['psnr_db']:.1f} dB" if "psnr_db" in results["after"] else ""
  val = results["val"]
  print(f"{METHOD_TITLES[results['method']]} on {results['dataset']} test: accuracy "
        f"{100 * before:.1f}% -> {100 * after:.1f}% ({100 * (after - before):+.1f} points){psnr}; "
        f"val {100 * val['before']['accuracy']:.1f}% -> {100 * val['after']['accuracy']:.1f}%. "
        f"Outputs: {workdir}")
