"""Before / DFT / MFT / DFT+MFT on the same splits over seeds: the paper's comparison.

:func:`run` trains the classifier on the source for each seed ``s`` (``config.seed``,
``config.seed + 1``, ...; ``classifier/seed<s>``; a model of your own, of a
``config.model.kind`` other than ``vgg``, serves every seed as it is), runs each
method on the target (``dft/seed<s>``, ``mft/seed<s>``, ``dft_mft/seed<s>``) and
writes ``compare.md``, ``compare.csv`` and ``compare.json``: mean +- std over seeds,
and the paper's claims checked seed by seed. Finished runs are skipped, interrupted ones resume.

Compares that differ only in their ``dft``/``mft``/``dft_mft`` sections (the points of a
sweep over those) can share their classifiers: with ``shared_classifiers=DIR`` each seed's
classifier is trained once, in ``DIR/<digest of what trains it>/seed<s>``, under a file
lock, so concurrent tasks of a cluster sweep wait for it instead of training it again.

Example::

  comparison = run(config, "runs/paper/mnist5k-uci_digits", seeds=3)
  comparison["claims"]
"""
import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from dfm import data
from dfm.report.tables import format_mean_std, markdown_table, write_csv
from dfm.run.methods import METHODS as RUNS
from dfm.run.checks import check_schedule
from dfm.run.settings import has_settings
from dfm.run.results import METHOD_TITLES
from dfm.run.workdir import claim_workdir, run_once, write_json

METHODS = {name: RUNS[name] for name in ("dft", "mft", "dft_mft")}
TITLES = {"before": "before (frozen classifier)", **METHOD_TITLES}


def seeded(config: ml_collections.ConfigDict, seed: int,
           classifier_dir: Path | None) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``seed`` and the classifier trained for it (None: a
  model of your own, ``config.model``, the same for every seed)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.seed = seed
  if classifier_dir is not None:
    copy.classifier_dir = str(classifier_dir)
  copy.lock()
  return copy


def classifier_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` without what only the methods read (``dft``, ``mft``, ``dft_mft``,
  ``probe``, ``classifier_dir``): all that trains the classifier, and the config its
  workdir keeps."""
  kept = {k: v for k, v in config.to_dict().items()
          if k not in ("dft", "mft", "dft_mft", "probe", "classifier_dir")}
  return ml_collections.ConfigDict(kept)


def shared_classifier_dir(own: ml_collections.ConfigDict, shared: Path, seed: int) -> Path:
  """``shared/<12 hex digits of own>/seed<s>`` for a classifier's config ``own``
  (:func:`classifier_config`, before its seed): one folder per distinct classifier,
  whatever the methods' settings."""
  text = json.dumps(own.to_dict(), sort_keys=True, default=str)
  return shared / hashlib.sha256(text.encode()).hexdigest()[:12] / f"seed{seed}"


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``lock_file`` (created if missing)."""
  lock_file.parent.mkdir(parents=True, exist_ok=True)
  with lock_file.open("a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def seed_classifier(config: ml_collections.ConfigDict, seed: int, root: Path,
                    shared: Path | None = None) -> Path:
  """Trains (or finds) the classifier of ``seed`` on ``config.train``: in
  ``root/classifier/seed<s>``, or shared (:func:`shared_classifier_dir`); returns its workdir."""
  print(f"== seed {seed}: classifier on {config.train.dataset}", flush=True)
  if shared is None:
    classifier_dir = root / "classifier" / f"seed{seed}"
    run_once(RUNS["train_classifier"], seeded(config, seed, classifier_dir), classifier_dir)
    return classifier_dir
  own = classifier_config(config)
  classifier_dir = shared_classifier_dir(own, shared, seed)
  own.seed = seed
  own.lock()
  with _exclusive(classifier_dir.with_suffix(".lock")):
    run_once(RUNS["train_classifier"], own, classifier_dir)
  return classifier_dir


def _check_methods(methods: list[str]) -> None:
  unknown = sorted(set(methods) - set(METHODS))
  if unknown or not methods:
    raise ValueError(f"--methods={','.join(methods)} must name at least one of {list(METHODS)}"
                     f"{f'; unknown: {unknown}' if unknown else ''}.")


def run(config: ml_collections.ConfigDict, workdir: str, *, seeds: int = 3,
        methods: list[str] | tuple[str, ...] = tuple(METHODS),
        shared_classifiers: Path | None = None) -> dict[str, Any]:
  """Runs every method for every seed; writes and returns the comparison.

  ``shared_classifiers``: a folder where compares with the same classifier config
  share each seed's classifier (default: ``workdir/classifier/seed<s>``, this one's own).
  """
  _check_methods(list(methods))
  if seeds < 1:
    raise ValueError(f"--seeds must be at least 1, got {seeds}.")
  if has_settings(config):
    raise ValueError("config.dft.lams/lrs train K settings in one DFT run, which compare's "
                     "table of one run per method cannot hold: set config.dft.lam and lr (or "
                     "sweep them: experiments.sweep --experiment=compare --grid='dft.lam=...').")
  trains = config.model.get("kind", "vgg") == "vgg"  # Else the model is given, frozen.
  for section in ("train",) * trains + tuple(methods):
    check_schedule(config, section)
  datasets = [config.train.dataset] if trains else []
  for dataset in {*datasets, config.dft.dataset, config.mft.dataset}:
    data.open_splits(dataset, config.data_dir, config.model.input_shape)
  root = claim_workdir(workdir, config)
  results: dict[str, list[dict]] = {method: [] for method in methods}
  for seed in range(config.seed, config.seed + seeds):
    classifier_dir = seed_classifier(config, seed, root, shared_classifiers) if trains else None
    config_s = seeded(config, seed, classifier_dir)
    for method in methods:
      print(f"== seed {seed}: {METHOD_TITLES[method]}", flush=True)
      results[method].append(run_once(METHODS[method], config_s, root / method / f"seed{seed}"))
  comparison = summarize(results, list(range(config.seed, config.seed + seeds)))
  _write(root, comparison)
  return comparison


def summarize(results: dict[str, list[dict]], seeds: list[int]) -> dict[str, Any]:
  """Rows of mean +- std over ``seeds``, and the paper's claims checked seed by seed."""
  first = next(iter(results.values()))
  rows = {"before": [r["before"]["accuracy"] for r in first]}
  rows.update({m: [r["after"]["accuracy"] for r in runs] for m, runs in results.items()})
  comparison = {
      "dataset": first[0]["dataset"], "seeds": seeds,
      "test_accuracy": rows,
      "val_accuracy": {
          "before": [r["val"]["before"]["accuracy"] for r in first],
          **{m: [r["val"]["after"]["accuracy"] for r in runs] for m, runs in results.items()}},
      "psnr_db": {m: [r["after"]["psnr_db"] for r in runs] for m, runs in results.items()
                  if "psnr_db" in runs[0]["after"]},
      "ssim": {m: [r["after"]["ssim"] for r in runs] for m, runs in results.items()
               if "ssim" in runs[0]["after"]},
  }
  comparison["claims"] = _claims(rows)
  return comparison


def _wins(a: list[float], b: list[float]) -> int:
  return sum(x > y for x, y in zip(a, b))


def _claims(rows: dict[str, list[float]]) -> list[str]:
  """The paper's claims, stated as they came out here."""
  claims, n = [], len(rows["before"])
  mean = {m: sum(v) / len(v) for m, v in rows.items()}
  if {"dft", "mft"} <= set(rows):
    held = mean["dft"] > mean["mft"]
    claims.append(f"DFT beats MFT: {'held' if held else 'did not hold'} (mean test "
                  f"{100 * mean['dft']:.1f}% vs {100 * mean['mft']:.1f}%; DFT ahead in "
                  f"{_wins(rows['dft'], rows['mft'])} of {n} seeds).")
  if {"dft", "mft", "dft_mft"} <= set(rows):
    best_single = max(mean["dft"], mean["mft"])
    held = mean["dft_mft"] > best_single
    ahead = sum(c > max(d, m) for c, d, m in zip(rows["dft_mft"], rows["dft"], rows["mft"]))
    claims.append(f"DFT+MFT beats both: {'held' if held else 'did not hold'} (mean test "
                  f"{100 * mean['dft_mft']:.1f}% vs best single {100 * best_single:.1f}%; "
                  f"ahead of both in {ahead} of {n} seeds).")
  return claims


def markdown(comparison: dict[str, Any]) -> str:
  """The comparison as a markdown table with the claims below it."""
  header = ["method", "test accuracy (%)", "val accuracy (%)", "PSNR (dB)", "SSIM"]
  rows = [[TITLES[m], format_mean_std(v, scale=100),
           format_mean_std(comparison["val_accuracy"][m], scale=100),
           format_mean_std(comparison["psnr_db"].get(m, [])),
           format_mean_std(comparison["ssim"].get(m, []), digits=3)]
          for m, v in comparison["test_accuracy"].items()]
  claims = "\n".join(f"- {claim}" for claim in comparison["claims"])
  return (f"{comparison['dataset']}, mean +- std over seeds {comparison['seeds']}\n\n"
          + markdown_table(header, rows) + "\n\n" + claims)


def _write(root: Path, comparison: dict[str, Any]) -> None:
  text = markdown(comparison)
  (root / "compare.md").write_text(text + "\n")
  write_json(root / "compare.json", comparison)

  def per_seed(name: str, method: str, index: int) -> Any:
    return comparison[name].get(method, [""] * (index + 1))[index]

  write_csv(root / "compare.csv",
            ["method", "seed", "test_accuracy", "val_accuracy", "psnr_db", "ssim"],
            [[m, seed, acc, per_seed("val_accuracy", m, i), per_seed("psnr_db", m, i),
              per_seed("ssim", m, i)]
             for m, values in comparison["test_accuracy"].items()
             for i, (seed, acc) in enumerate(zip(comparison["seeds"], values))])
  print(text, flush=True)

