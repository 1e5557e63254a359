"""When does fine-tuning the data beat fine-tuning the model? Test accuracy against labels.

For each number ``k`` of labelled target images per class (a stratified, seeded,
nested subset: :mod:`dfm.data.subsets`; validation cut to ``k`` per class too, or
whole), each method of :data:`METHODS` runs at every learning rate of its short
grid (:data:`LR_GRIDS`), each seed with the same images; the learning rate is chosen
on the (small) validation split, and the chosen run's test accuracy reported.
With fewer images an epoch is fewer batches: the epochs grow so that every method
makes as many updates as on the whole split (:func:`schedule_for`).

Runs go to ``ROOT/<method>/k=<k>/<lr key>=<lr>/seed<s>`` (:func:`plan`); a finished
one is read back, an interrupted one resumes. :func:`summarize` reads them into the
curve, :func:`crossover` states where DFT (or DFT+MFT) beats both model-side
baselines seed by seed.

Example::

  summary = run(config, Path("runs/curve"), shots=[1, 2, 4, 0], seeds=3,
                methods=list(METHODS), lr_grids=LR_GRIDS, full_validation=False)
  summary["verdict"]
"""
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dfm import data, models
from dfm.report.figures import plot_label_curve
from dfm.report.tables import format_mean_std, markdown_table, write_csv
from dfm.run.checks import check_schedule
from dfm.run.workdir import claim_workdir, write_json
from dfm.studies.compare import seed_classifier
from dfm.studies.sweep import Launcher, Run, configured, run_here

# name -> (the method that runs, fixed config fields)
METHODS = {
    "dft": ("dft", {}),
    "dft_mft": ("dft_mft", {}),
    "mft": ("mft", {"mft.layers": "all"}),
    "mft_head": ("mft", {"mft.layers": "head"}),
    "probe": ("probe", {}),
}
TITLES = {"dft": "DFT", "dft_mft": "DFT+MFT", "mft": "MFT (all layers)",
          "mft_head": "MFT (head)", "probe": "Linear probe"}
DATA_SIDE = ("dft", "dft_mft")
MODEL_SIDE = ("mft", "mft_head", "probe")
# name -> (the learning rate's config key, its grid). DFT+MFT: MFT's rate (DFT's as configured).
LR_GRIDS = {
    "dft": ("dft.lr", (0.1, 0.3, 1.0)),
    "dft_mft": ("mft.lr", (1e-4, 1e-3, 5e-3)),
    "mft": ("mft.lr", (1e-4, 1e-3, 5e-3)),
    "mft_head": ("mft.lr", (1e-4, 1e-3, 5e-3)),
    "probe": ("probe.lr", (1e-3, 1e-2, 1e-1)),
}
# A few-label batch is a multiple of this, so it splits over 1, 2, 4 or 8 devices.
BATCH_MULTIPLE = 8
# The sections whose labels a method's k sets (DFT+MFT reads DFT's: one subset, two phases).
LABELLED_SECTIONS = ("dft", "mft", "probe")


def parse_shots(values: Sequence[str]) -> list[int]:
  """``["1", "2", "all"]`` -> ``[1, 2, 0]`` (0: the whole split), sorted, ``all`` last.

  >>> parse_shots(["4", "all", "1"])
  [1, 4, 0]
  """
  shots = []
  for value in values:
    if value != "all" and not (value.isdigit() and int(value) > 0):
      raise ValueError(f"--shots: {value!r} is neither a positive number of labels per "
                       "class nor 'all'.")
    shots.append(0 if value == "all" else int(value))
  return sorted(set(shots), key=lambda k: (k == 0, k))


def shots_name(k: int) -> str:
  """``"all"`` for 0, else the number."""
  return "all" if k == 0 else str(k)


def class_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """``{"train": n, "smallest": k, "smallest_validation": k}``: the target's train size
  and its smallest class's examples in train and validation (the largest k a subset
  can take)."""
  sources = data.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  smallest = {split: int(np.bincount(data.split_labels(sources[split]),
                                     minlength=config.model.num_classes).min())
              for split in ("train", "validation")}
  return {"train": len(sources["train"]), "smallest": smallest["train"],
          "smallest_validation": smallest["validation"]}


def schedule_for(batch_size: int, epochs: int, full: int, subset: int) -> tuple[int, int]:
  """``(batch size, epochs)`` on ``subset`` examples making at least the updates the
  schedule makes on ``full``: the batch at most the subset rounded up to a multiple
  of :data:`BATCH_MULTIPLE` (the padding rows are masked), never above ``batch_size``.

  >>> schedule_for(800, 5, 1078, 20)  # 2 batches x 5 epochs on all: 10 batches of 24
  (24, 10)
  """
  batch = min(batch_size, -(-subset // BATCH_MULTIPLE) * BATCH_MULTIPLE)
  return batch, math.ceil(epochs * data.num_batches(full, batch_size) / data.num_batches(subset,
                                                                                          batch))


def labels_point(config: ml_collections.ConfigDict, k: int, val_k: int,
                 counts: dict[str, int]) -> dict[str, Any]:
  """The config fields of ``k`` train and ``val_k`` validation labels per class (0: whole)
  in every labelled section the config has, with the batch sizes and epochs of
  :func:`schedule_for` (and DFT+MFT's phases' epochs scaled as DFT's and MFT's)."""
  point: dict[str, Any] = {}
  num_classes = config.model.num_classes
  sections = [section for section in LABELLED_SECTIONS if section in config]
  for section in sections:
    point[f"{section}.examples_per_class"] = k
    point[f"{section}.val_examples_per_class"] = val_k
    if k:
      batch, epochs = schedule_for(config[section].batch_size, config[section].epochs,
                                   counts["train"], k * num_classes)
      point.update({f"{section}.batch_size": batch, f"{section}.epochs": epochs})
  if k and {"dft", "mft", "dft_mft"} <= set(config):
    for section in ("dft", "mft"):
      ratio = point[f"{section}.epochs"] / config[section].epochs
      field = f"dft_mft.{section}_epochs"
      point[field] = math.ceil(config.dft_mft[f"{section}_epochs"] * ratio)
  return point


def check(config: ml_collections.ConfigDict, *, shots: list[int], methods: Sequence[str],
          full_validation: bool) -> dict[str, int]:
  """Checks the curve before anything is trained or written; returns :func:`class_counts`.

  Raises:
    ValueError: an unknown method, a section a method needs missing from the config,
      MFT of the head of a model of your own, more labels per class than a class has.
  """
  unknown = sorted(set(methods) - set(METHODS))
  if unknown or not methods:
    raise ValueError(f"--methods: unknown {unknown}; choose from {list(METHODS)}.")
  own_model = config.model.get("kind", "vgg") != "vgg"
  if own_model and "mft_head" in methods:
    raise ValueError("mft_head fine-tunes the Dense layers of dfm's VGG; a model of your own "
                     "has none: leave it out of --methods (e.g. --methods=dft,dft_mft,mft,probe).")
  for name in methods:
    check_schedule(config, METHODS[name][0])
  if own_model and "probe" in methods:  # dfm's VGG always has one output layer.
    models.output_layer(models.load_frozen_classifier(config)[1], config.model.num_classes)
  counts = class_counts(config)
  too_many = [k for k in shots if k > counts["smallest"]]
  if too_many:
    raise ValueError(f"--shots {too_many}: the target's smallest class has {counts['smallest']} "
                     f"train examples; ask for at most that many (or 'all').")
  too_many = [k for k in shots if k > counts["smallest_validation"]]
  if not full_validation and too_many:
    raise ValueError(f"--shots {too_many} labels per class for validation, but its smallest "
                     f"class has {counts['smallest_validation']}: drop those shots or pass "
                     "--val_shots=all.")
  return counts


def plan(config: ml_collections.ConfigDict, root: Path, *, shots: list[int], seeds: list[int],
         methods: Sequence[str], lr_grids: dict[str, tuple[str, tuple[float, ...]]],
         classifier_dirs: dict[int, str | None], full_validation: bool) -> dict[str, list[Run]]:
  """Every run of the curve, by method, each config checked (:func:`check`) before any runs.

  ``classifier_dirs``: seed -> its classifier (None: the model of the config, frozen
  as it is). Validation is cut to ``k`` per class too unless ``full_validation``.
  """
  counts = check(config, shots=shots, methods=methods, full_validation=full_validation)
  runs: dict[str, list[Run]] = {}
  for name in methods:
    method, fixed = METHODS[name]
    key, grid = lr_grids[name]
    runs[name] = []
    for k in shots:
      labels = labels_point(config, k, 0 if full_validation else k, counts)
      for lr in grid:
        for seed in seeds:
          point = {**labels, **fixed, key: lr}
          run_config = configured(config, point, seed)
          if classifier_dirs[seed] is not None:
            with run_config.unlocked():
              run_config.classifier_dir = classifier_dirs[seed]
          check_schedule(run_config, method)
          workdir = root.absolute() / name / f"k={shots_name(k)}" / f"{key}={lr:g}" / f"seed{seed}"
          runs[name].append(Run(point, seed, workdir, run_config))
  return runs


def read_finished(workdir: Path) -> dict | None:
  """A finished run's ``metrics.json``; None while it has not finished."""
  path = Path(workdir) / "metrics.json"
  return json.loads(path.read_text()) if path.is_file() else None


def summarize(runs: dict[str, list[Run]], read=read_finished) -> dict[str, Any]:
  """The curve: per method and k the learning rate of the highest validation accuracy
  averaged over seeds (ties: the first of the grid), and each seed's test accuracy (and
  PSNR, for the data-side methods) at it. ``read(workdir)``: a finished run's metrics,
  or None (the run is listed in ``missing``)."""
  curve: dict[str, dict[str, dict[int, dict]]] = {}
  missing, before = [], {}
  for name, method_runs in runs.items():
    key = LR_GRIDS[name][0]
    by_k: dict[int, dict[float, dict[int, dict]]] = {}
    for run in method_runs:
      results = read(run.workdir)
      if results is None:
        missing.append(str(run.workdir))
        continue
      k = run.point["dft.examples_per_class"]
      by_k.setdefault(k, {}).setdefault(run.point[key], {})[run.seed] = results
      before[run.seed] = results["before"]["accuracy"]
    curve[name] = {}
    for k in sorted(by_k, key=lambda k: (k == 0, k)):
      lr, seeds = max(by_k[k].items(), key=lambda item: np.mean(
          [r["val"]["after"]["accuracy"] for r in item[1].values()]))
      curve[name][shots_name(k)] = {
          seed: {"test": r["after"]["accuracy"], "val": r["val"]["after"]["accuracy"], "lr": lr,
                 "psnr_db": r["after"].get("psnr_db")} for seed, r in sorted(seeds.items())}
  return {"curve": curve, "before": before, "missing": missing}


def crossover(summary: dict[str, Any]) -> tuple[list[str], str]:
  """Per k, seed by seed, whether DFT (or DFT+MFT) beats every model-side method run
  (MFT of all layers or the head, the linear probe); and the verdict: the ks where
  it does on every seed and the largest of them, or that it never does."""
  curve = summary["curve"]
  baselines = [m for m in MODEL_SIDE if m in curve]
  if not baselines:
    return [], "No model-side method ran: nothing to cross."
  against = ", ".join(TITLES[b] for b in baselines)
  lines, verdicts = [], []
  for name in [m for m in DATA_SIDE if m in curve]:
    held = []
    for shots, seeds in curve[name].items():
      wins = [seed for seed, run in seeds.items()
              if all(run["test"] > curve[b].get(shots, {}).get(seed, {}).get("test", 1.0)
                     for b in baselines)]
      lines.append(f"k={shots}: {TITLES[name]} beats {against} in {len(wins)} of "
                   f"{len(seeds)} seeds.")
      if seeds and len(wins) == len(seeds):
        held.append(shots)
    if held:
      verdicts.append(f"{TITLES[name]} beats {against} on every seed at k = {', '.join(held)} "
                      f"(largest: {held[-1]}).")
  if not verdicts:
    tried = " and ".join(TITLES[m] for m in DATA_SIDE if m in curve) or "No data-side method"
    return lines, f"{tried} did not beat {against} on every seed at any k tried."
  return lines, " ".join(verdicts)


def table(summary: dict[str, Any]) -> str:
  """Test accuracy (mean +- std over seeds) per method and k, markdown."""
  curve = summary["curve"]
  columns = list(dict.fromkeys(s for runs in curve.values() for s in runs))
  rows = [["before (frozen)"] + [format_mean_std(list(summary["before"].values()), scale=100)]
          * len(columns)]
  rows += [[TITLES[name]] + [format_mean_std([r["test"] for r in runs.get(s, {}).values()],
                                             scale=100) for s in columns]
           for name, runs in curve.items()]
  rows += [[f"{TITLES[name]} PSNR (dB)"] + [format_mean_std(
      [r["psnr_db"] for r in curve[name].get(s, {}).values()]) for s in columns]
           for name in DATA_SIDE if name in curve]
  return markdown_table(["test accuracy (%) at k labels per class"] + columns, rows)


def write_report(root: Path, summary: dict[str, Any], *, title: str,
                 all_labels: float) -> str:
  """Writes ``label_curve.md``, ``.csv``, ``.json`` and ``.png`` to ``root``; returns
  the markdown (table, verdict, per-k lines). ``all_labels``: where ``all`` is drawn."""
  lines, verdict = crossover(summary)
  summary = {**summary, "verdict": verdict, "crossover": lines}
  text = (f"{title}: test accuracy, mean +- std over seeds {sorted(summary['before'])}; "
          "learning rates chosen on validation\n\n" + table(summary) + f"\n\n{verdict}\n\n"
          + "\n".join(f"- {line}" for line in lines))
  (root / "label_curve.md").write_text(text + "\n")
  write_json(root / "label_curve.json", summary)
  write_csv(root / "label_curve.csv", ["method", "labels_per_class", "seed", "test_accuracy",
                                       "val_accuracy", "lr", "psnr_db"],
            [[name, shots, seed, run["test"], run["val"], run["lr"], run["psnr_db"]]
             for name, by_shots in summary["curve"].items()
             for shots, seeds in by_shots.items() for seed, run in seeds.items()])
  plot_label_curve({TITLES[name]: {shots: [run["test"] for run in seeds.values()]
                                   for shots, seeds in by_shots.items()}
                    for name, by_shots in summary["curve"].items()},
                   before=float(np.mean(list(summary["before"].values()))),
                   all_labels=all_labels, path=root / "label_curve.png", title=title)
  return text


def run(config: ml_collections.ConfigDict, root: Path, *, shots: list[int], seeds: int,
        methods: Sequence[str], lr_grids: dict[str, tuple[str, tuple[float, ...]]],
        full_validation: bool, launch: Launcher = run_here) -> dict[str, Any]:
  """Checks the curve, trains each seed's classifier (a model of your own,
  ``config.model.kind``, serves every seed as it is), launches every method's runs
  (``launch``: here, or submitted to SLURM / Ray), and writes the report once all
  have finished. Returns :func:`summarize`'s summary (with ``text`` when written)."""
  check(config, shots=shots, methods=methods, full_validation=full_validation)
  root = claim_workdir(str(root), config)
  seed_list = list(range(config.seed, config.seed + seeds))
  trains = config.model.get("kind", "vgg") == "vgg"
  classifiers = {seed: str(seed_classifier(config, seed, root)) if trains else None
                 for seed in seed_list}
  runs = plan(config, root, shots=shots, seeds=seed_list, methods=methods, lr_grids=lr_grids,
              classifier_dirs=classifiers, full_validation=full_validation)
  for name, method_runs in runs.items():
    print(f"== {TITLES[name]}: {len(method_runs)} runs", flush=True)
    launch(method_runs, root / name, experiment=METHODS[name][0], seeds=1)
  summary = summarize(runs)
  if not summary["missing"]:
    source = config.train.dataset if trains else Path(config.model.get("path", "")).name
    summary["text"] = write_report(
        root, summary, title=f"{source} -> {config.dft.dataset}",
        all_labels=class_counts(config)["train"] / config.model.num_classes)
  return summary
