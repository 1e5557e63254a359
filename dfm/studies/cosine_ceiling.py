"""What a gradient estimator must reach: white-box DFT with its gradient degraded to a cosine.

Query-only DFT moves the noise along estimates of ``grad C``. An unbiased estimate
is the gradient plus an error; :func:`dfm.estimators.at_cosine` gives white-box DFT
exactly such estimates, with a chosen cosine ``c`` to the true gradient, and the
same step count, batches, optimizer and exact appearance gradient as the query run.
What that buys is a ceiling for any estimator whose estimates have cosine ``c``,
and it needs no query: the model is the JAX classifier the black box hides.
(``config.query.cosine=True`` logs the cosine a query run's estimates really have.)

For each step count, cosine and learning rate, one run per seed; the learning
rate is chosen on mean validation accuracy over the seeds, test is reported
beside it as a share of a reference white-box gain.

Example::

  rows = ceiling(config, apply_fn, params, sources, cosines=(1.0, 0.1), steps=(100,),
                 lrs=(0.1, 0.3), seeds=(0, 1, 2), reference=(0.674, 0.808))
"""
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections

from dfm import data, models
from dfm.optim import make_optimizer
from dfm.query import init_query_state, make_cosine_step
from dfm.report.tables import format_mean_std, markdown_table, mean_std, write_csv
from dfm.run.evaluate import EvalStep, evaluate_split, make_eval_step
from dfm.run.phases import noise_shape
from dfm.run.workdir import claim_workdir, write_json

HEADER = ["steps", "cosine", "lr (chosen on val)", "val accuracy (%)", "test accuracy (%)",
          "share of the white-box test gain (%)", "PSNR (dB)"]


def ceiling_run(config: ml_collections.ConfigDict, apply_fn: Any, params: Any,
                sources: dict[str, Any], eval_step: EvalStep, *, cosine: float, steps: int,
                lr: float, seed: int) -> dict[str, float]:
  """One run: ``steps`` batches of ``config.dft.batch_size`` (seeded shuffle),
  ``config.dft``'s optimizer and schedule over the steps at ``lr``; returns the
  validation and test accuracy (by ``eval_step``) and the test PSNR of the last noise."""
  schedule = config.dft
  optimizer = make_optimizer(schedule.optimizer, lr, schedule=schedule.lr_schedule,
                             total_steps=steps)
  step = make_cosine_step(apply_fn, params, optimizer, lam=schedule.lam, cosine=cosine,
                          transform=schedule.transform, class_term=schedule.class_term)
  state = init_query_state(jnp.zeros(noise_shape(config), jnp.float32), optimizer, seed=seed,
                           validation_size=0)
  epochs = math.ceil(steps / data.num_batches(len(sources["train"]), schedule.batch_size))
  batches = data.make_train_loader(sources["train"], batch_size=schedule.batch_size,
                                   seed=seed, num_epochs=epochs)
  for batch in itertools.islice(batches, steps):
    state, _ = step(state, batch)
  val, test = (evaluate_split(eval_step, params, state["noise"], sources[split], config)
               for split in ("validation", "test"))
  return {"val": val["accuracy"], "test": test["accuracy"], "psnr_db": test["psnr_db"]}


def _mean(runs: Sequence[dict[str, float]], key: str) -> float:
  return mean_std([run[key] for run in runs])[0]


def ceiling(config: ml_collections.ConfigDict, apply_fn: Any, params: Any,
            sources: dict[str, Any], *, cosines: Sequence[float], steps: Sequence[int],
            lrs: Sequence[float], seeds: Sequence[int],
            reference: tuple[float, float]) -> list[dict[str, Any]]:
  """One record per (steps, cosine): the lr of ``lrs`` with the best mean validation
  accuracy over ``seeds`` (ties: the first) and its runs. ``reference`` is white-box
  DFT's (test before, test after): the gain the shares are of."""
  if not cosines or not steps or not lrs or not seeds:
    raise ValueError("The ceiling needs at least one cosine, step count, lr and seed.")
  records, eval_step = [], make_eval_step(apply_fn, transform=config.dft.transform)
  for count, cosine in itertools.product(steps, cosines):
    by_lr = {lr: [ceiling_run(config, apply_fn, params, sources, eval_step, cosine=cosine,
                              steps=count, lr=lr, seed=seed) for seed in seeds] for lr in lrs}
    lr = max(lrs, key=lambda lr: _mean(by_lr[lr], "val"))
    records.append({"steps": count, "cosine": cosine, "lr": lr, "runs": by_lr[lr],
                    "reference": list(reference)})
    print(f"steps {count}, cosine {cosine}: lr {lr}, val {100 * _mean(by_lr[lr], 'val'):.1f}%, "
          f"test {100 * _mean(by_lr[lr], 'test'):.1f}%", flush=True)
  return records


def table_row(record: dict[str, Any]) -> list[str]:
  """A record as the cells of :data:`HEADER` (mean +- std over the seeds)."""
  before, after = record["reference"]
  runs = record["runs"]
  # A white-box run that gained nothing gives no share ("-").
  shares = [(run["test"] - before) / (after - before) if after != before else None
            for run in runs]
  return [str(record["steps"]), f"{record['cosine']:g}", f"{record['lr']:g}",
          format_mean_std([run["val"] for run in runs], scale=100),
          format_mean_std([run["test"] for run in runs], scale=100),
          format_mean_std(shares, scale=100),
          format_mean_std([run["psnr_db"] for run in runs])]


def white_box_reference(config: ml_collections.ConfigDict, run_dir: str) -> tuple[float, float]:
  """``(test before, test after)`` of a finished white-box DFT run of the same
  classifier and dataset (e.g. ``runs/demo/dft`` of ``make demo``)."""
  path = Path(run_dir)
  if not ((path / "metrics.json").is_file() and (path / "config.json").is_file()):
    raise ValueError(f"No finished white-box DFT run in {path} (no metrics.json and "
                     "config.json): run `make demo`, or experiments.dft with this "
                     "classifier, and pass its workdir as --white_box.")
  ran = json.loads((path / "config.json").read_text())
  same = (Path(ran["classifier_dir"]).absolute() == Path(config.classifier_dir).absolute()
          and ran["dft"]["dataset"] == config.dft.dataset)
  if not same:
    raise ValueError(f"The white-box run {path} fine-tuned {ran['classifier_dir']} on "
                     f"{ran['dft']['dataset']}, not {config.classifier_dir} on "
                     f"{config.dft.dataset}: pass a run of this classifier and dataset.")
  metrics = json.loads((path / "metrics.json").read_text())
  return metrics["before"]["accuracy"], metrics["after"]["accuracy"]


def run(config: ml_collections.ConfigDict, workdir: str, *, cosines: Sequence[float],
        steps: Sequence[int], lrs: Sequence[float], seeds: Sequence[int],
        white_box: str) -> str:
  """The ceiling of ``config`` (a query-only config of a JAX classifier, e.g.
  ``configs/query.py:digits``) against the white-box run ``white_box``; writes
  ``ceiling.md``, ``.csv`` and ``.json`` into ``workdir`` (bound to these settings:
  other settings are refused there) and returns the table."""
  reference = white_box_reference(config, white_box)
  apply_fn, params = models.load_frozen_classifier(config)
  sources = data.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  settings = ml_collections.ConfigDict(config.to_dict())
  settings.ceiling = {"cosines": list(cosines), "steps": list(steps), "lrs": list(lrs),
                      "seeds": list(seeds), "white_box": str(Path(white_box).absolute())}
  path = claim_workdir(workdir, settings)
  records = ceiling(config, apply_fn, params, sources, cosines=cosines, steps=steps, lrs=lrs,
                    seeds=seeds, reference=reference)
  rows = [table_row(record) for record in records]
  text = markdown_table(HEADER, rows)
  (path / "ceiling.md").write_text(text + "\n")
  write_csv(path / "ceiling.csv", HEADER, rows)
  write_json(path / "ceiling.json", {"white_box_test": list(reference), "records": records})
  return (f"White-box DFT ({white_box}): test {100 * reference[0]:.1f}% -> "
          f"{100 * reference[1]:.1f}%.\n{text}")
