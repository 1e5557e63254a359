"""Query-only DFT as a method: ``query_dft(config, workdir) -> metrics``.

The model is a black box (``config.black_box.kind``): ``jax`` (a classifier
checkpoint seen only through its scores), ``onnx`` (a file run by onnxruntime)
or ``http`` (a KServe V2 server). Writes into the workdir: config.json,
checkpoints/, metrics.jsonl, queries.csv and queries.png (validation accuracy
against queries spent), noise.npy, noise.png, metrics.json (before/after on
validation and test, and the query ledger) and report.md. Starting again
resumes from the last checkpoint, and the query count with it.

Example::

  results = query_dft(config, "runs/query/gender_v1")
  results["queries"]["total"]["images"]
"""
from typing import Any

import ml_collections
import numpy as np

from dfm import black_box, models
from dfm.black_box.base import add_spent, ledger_ints
from dfm.query.budget import budget_share
from dfm.query import DISTILL, SpentTally, TrueGradient, check_query, make_black_box_eval_step
from dfm.query import make_true_gradient
from dfm.report.document import append_queries
from dfm.run.checks import check_schedule
from dfm.run.methods import method_splits
from dfm.run.phases import fit_noise_by_queries, noise_shape
from dfm.run.results import draws_figures, write_query_curve, write_results
from dfm.run.workdir import claim_workdir
from dfm.types import ApplyFn


def _true_gradient(config: ml_collections.ConfigDict) -> TrueGradient | None:
  """For ``config.query.cosine``: the white-box gradient of a JAX model's class term."""
  if not config.query.cosine:
    return None
  if config.black_box.kind != "jax":
    raise ValueError("config.query.cosine needs the true gradient, which only a JAX model "
                     "(config.black_box.kind='jax') has.")
  apply_fn, params = models.load_frozen_classifier(config)
  return make_true_gradient(apply_fn, params, transform=config.dft.transform,
                            class_term=config.dft.class_term)


def _surrogate(config: ml_collections.ConfigDict) -> tuple[ApplyFn, Any] | None:
  """``(apply_fn, params)`` of ``config.query.surrogate``: the direction prior's model
  (``prior='surrogate'``) or the student (``estimator='distill'``); None otherwise."""
  if config.query.prior != "surrogate" and config.query.estimator != DISTILL:
    return None
  surrogate = ml_collections.ConfigDict(config.to_dict())
  surrogate.model = config.query.surrogate.model
  surrogate.classifier_dir = config.query.surrogate.classifier_dir
  return models.load_frozen_classifier(surrogate)


def _surrogate_gradient(config: ml_collections.ConfigDict,
                        surrogate: tuple[ApplyFn, Any] | None) -> TrueGradient | None:
  """For ``config.query.prior='surrogate'``: the white-box gradient of the class term
  through the surrogate model, the direction prior."""
  if config.query.prior != "surrogate":
    return None
  return make_true_gradient(*surrogate, transform=config.dft.transform,
                            class_term=config.dft.class_term)


def _spending(config: ml_collections.ConfigDict, fitted: dict[str, int]) -> dict[str, Any]:
  """The share of the budget the fit spent, and a line saying so (a warning under 95%)."""
  share = budget_share(config, fitted)
  if not share:
    return {}
  line = f"Spent {100 * share:.1f}% of the query budget."
  if share < 0.95:
    line += (" Less than 95%: the next batch and its validation would have passed it; "
             "a smaller config.dft.batch_size or config.query.directions spends it closer.")
  print(line, flush=True)
  return {"spent_share": share}


def query_dft(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fits the noise by queries, evaluates before/after through the model, writes outputs.

  Everything is checked (config, model, data) before the workdir is claimed.
  """
  check_schedule(config, "dft")
  model = black_box.from_config(config)
  sources = method_splits(config, "dft")
  check_query(config, model, len(sources["validation"]))
  surrogate = _surrogate(config)
  true_gradient, prior_gradient = _true_gradient(config), _surrogate_gradient(config, surrogate)
  noise_shape(config)
  workdir = claim_workdir(workdir, config)
  state, records = fit_noise_by_queries(config, model, sources, workdir,
                                        true_gradient=true_gradient,
                                        prior_gradient=prior_gradient,
                                        student=surrogate if config.query.estimator == DISTILL
                                        else None)
  curve = write_query_curve(workdir, records, with_figures=draws_figures(config))
  fitted, best, final = ledger_ints(state["queries"]), state["best"], SpentTally()
  spending = _spending(config, fitted)

  def queries() -> dict[str, Any]:
    return {"queries": {
        "fit": fitted, "budget": config.budget.to_dict(), **spending,
        "chosen": {"batch": int(best["batch"]), "images": int(best["images"]),
                   "val_accuracy": float(best["val_accuracy"]),
                   "val_correct": "".join(map(str, np.asarray(best["correct"], int)))},
        "curve_points": len(curve),
        "total": ledger_ints(add_spent(state["queries"], final.total))}}

  results = write_results(
      workdir, config, method="query_dft", dataset=config.dft.dataset,
      eval_step=make_black_box_eval_step(model, transform=config.dft.transform, tally=final),
      transform=config.dft.transform, before=(None, None), after=(None, best["noise"]),
      sources=sources, extra=queries)
  append_queries(workdir, results["queries"], with_figures=draws_figures(config))
  print(f"Queries: {fitted['images']} images in {fitted['calls']} calls to fit and select "
        f"({fitted['failures']} failed); {results['queries']['total']['images']} with the "
        "final evaluation.", flush=True)
  return results
