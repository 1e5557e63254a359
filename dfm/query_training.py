"""The query-only DFT phase: fit the noise through a black box, on a query budget.

Everything sent to the model is counted in the state's ledger (``queries``: calls,
images, failures), which every checkpoint keeps, so a resumed run continues the
count. The phase:

1. scores the validation split as it is (``N = 0``), once, and checkpoints;
2. runs :func:`dfm.query_dft.make_query_step` over the training batches; at each
   log it scores the validation split under the current noise and keeps the best
   (a strictly higher validation accuracy replaces it, so ties keep ``N = 0``);
3. stops early when the next batch (and the validation after it, if due) would
   pass ``config.budget.queries`` images or ``config.budget.calls`` calls.

The noise it returns is the best on validation, never the last, so a tiny
training split over-fitted cannot leave validation worse than no noise at all.

Example::

  state = fit_noise_by_queries(config, model, sources, Path("runs/q"))
  state["best"]["noise"], state["queries"]["images"]
"""
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dfm import checkpoint, estimators, loop, losses, runs
from dfm.black_box import BlackBox, fill_unknown, ledger_arrays, ledger_ints
from dfm.dft import Batch, DftState
from dfm.evaluate import EvalStep
from dfm.optim import make_optimizer
from dfm.query_dft import TrueGradient, images_per_batch, init_query_state, make_query_step
from dfm.report import save_queries_png
from dfm.tables import write_csv
from dfm.training import noise_shape, train_batches
from dfm.transform import perturb

# Accuracies closer than this are equal: the best is kept in float32.
_SAME_ACCURACY = 1e-6
CURVE_FIELDS = ("batch", "queries_images", "queries_calls", "val_accuracy", "best_val_accuracy")


def make_black_box_eval_step(model: BlackBox, *, kind: str) -> EvalStep:
  """An :data:`dfm.evaluate.EvalStep` that scores through ``model`` (``params`` unused).

  Only the batch's real (unmasked) rows are sent, so padding costs no queries;
  top-k replies are completed by :func:`dfm.black_box.fill_unknown`.
  """

  @jax.jit
  def perturbed_and_error(noise, images):
    perturbed = perturb(images, noise, kind=kind)
    return perturbed, losses.squared_distance_per_image(images=images, perturbed=perturbed)

  def eval_step(params: Any, noise: Any, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    del params
    images, keep = np.asarray(batch["image"]), np.asarray(batch["mask"]) > 0
    perturbed, error = (images, np.zeros(len(images), np.float32)) if noise is None else \
        jax.device_get(perturbed_and_error(noise, images))
    probabilities = np.zeros((len(images), model.num_classes), np.float32)
    probabilities[keep] = fill_unknown(model(np.asarray(perturbed)[keep]))
    return probabilities, error

  return eval_step


def check_query(config: ml_collections.ConfigDict, model: BlackBox, validation_size: int) -> None:
  """Checks ``config.query`` and ``config.budget`` before a single query is sent.

  The budget must at least pay for scoring the validation split once: ``N = 0``
  is always a candidate of the selection.

  Raises:
    ValueError: naming the field and what it must be.
  """
  query, budget = config.query, config.budget
  if query.estimator not in estimators.ESTIMATORS:
    raise ValueError(f"config.query.estimator={query.estimator!r} is not one of "
                     f"{estimators.ESTIMATORS}.")
  if query.directions < 1 or not query.scale > 0:
    raise ValueError(f"config.query needs directions >= 1 and scale > 0, got "
                     f"{query.directions} and {query.scale}.")
  if not 0 <= query.focus <= 1:
    raise ValueError(f"config.query.focus={query.focus} must be in [0, 1] (0: probe every image).")
  if query.images_per_step < 0 or 0 < query.images_per_step < 2 * query.directions:
    raise ValueError(f"config.query.images_per_step={query.images_per_step} must be 0 (no cap) "
                     f"or at least 2 x directions = {2 * query.directions}.")
  images, calls = _validation_cost(model, validation_size, config.eval_batch_size)
  for field, needed in (("queries", images), ("calls", calls)):
    if budget[field] < 0 or 0 < budget[field] < needed:
      raise ValueError(
          f"config.budget.{field}={budget[field]} cannot pay for scoring the validation split "
          f"once ({needed} {'images' if field == 'queries' else 'calls'}), which selection "
          "needs: give 0 (no limit) or at least that.")


def _validation_cost(model: BlackBox, num_examples: int, batch_size: int) -> tuple[int, int]:
  """``(images, calls)`` of scoring a split of ``num_examples`` once."""
  calls = sum(model.calls_for(min(batch_size, num_examples - start))
              for start in range(0, num_examples, batch_size))
  return num_examples, calls


class _Selection:
  """Scores the validation split through the model and keeps the best noise in the state."""

  def __init__(self, config: ml_collections.ConfigDict, model: BlackBox, source: Any) -> None:
    self.config, self.model, self.source = config, model, source
    self.eval_step = make_black_box_eval_step(model, kind=config.dft.transform)

  def __call__(self, state: DftState, done: int) -> tuple[DftState, dict[str, float]]:
    self.model.counts = ledger_ints(state["queries"])
    noise = None if done == 0 else state["noise"]
    accuracy = runs.evaluate_split(self.eval_step, None, noise, self.source,
                                   self.config)["accuracy"]
    queries = ledger_arrays(self.model.counts)
    best = state["best"]
    if accuracy > float(best["val_accuracy"]) + _SAME_ACCURACY:
      best = {"noise": jnp.zeros_like(state["noise"]) if noise is None else state["noise"],
              "val_accuracy": np.asarray(accuracy, np.float32), "batch": np.asarray(done, np.int64),
              "images": queries["images"]}
    metrics = {"val_accuracy": accuracy, "best_val_accuracy": float(best["val_accuracy"]),
               **{f"queries_{name}": int(value) for name, value in queries.items()}}
    return {**state, "queries": queries, "best": best}, metrics


def _budget_stop(config: ml_collections.ConfigDict, model: BlackBox, validation_size: int,
                 total_batches: int):
  """``stop_when(state, done)``: True when the next batch would pass the budget."""
  schedule, query = config.dft, config.query
  batch = images_per_batch(schedule.batch_size, query.directions, query.images_per_step)
  screened = batch if query.focus else 0  # Scored first under the current noise.
  probes = 2 * query.directions * batch
  step_images = (screened + probes) * schedule.updates_per_batch
  step_calls = (model.calls_for(screened) * bool(screened) + model.calls_for(probes)) \
      * schedule.updates_per_batch
  val_images, val_calls = _validation_cost(model, validation_size, config.eval_batch_size)
  log_every = config.log_every // schedule.updates_per_batch

  def stop_when(state: DftState, done: int) -> bool:
    validating = loop.is_due(done + 1, log_every, total_batches)
    images = int(state["queries"]["images"]) + step_images + validating * val_images
    calls = int(state["queries"]["calls"]) + step_calls + validating * val_calls
    over = (0 < config.budget.queries < images) or (0 < config.budget.calls < calls)
    if over:
      print(f"Query budget reached after batch {done}: {int(state['queries']['images'])} "
            f"images in {int(state['queries']['calls'])} calls spent.", flush=True)
    return over

  return stop_when


def _log_baseline(log_file: Path, metrics: dict[str, float]) -> None:
  """The ``N = 0`` validation score as the log's first line (batch 0)."""
  log_file.write_text(json.dumps({"batch": 0, **metrics}) + "\n")


def fit_noise_by_queries(config: ml_collections.ConfigDict, model: BlackBox,
                         sources: dict[str, Any], run_dir: Path, *,
                         true_gradient: TrueGradient | None = None) -> DftState:
  """Query-only DFT on ``sources["train"]``, selected on ``sources["validation"]``.

  Returns the final state: ``best`` holds the chosen noise, its validation
  accuracy, the batch and the images spent when it was scored; ``queries`` the
  ledger. ``true_gradient`` (white-box models only) logs the estimate's cosine.
  """
  schedule, query = config.dft, config.query
  batches, total_batches = train_batches(schedule, sources["train"], config.seed)
  optimizer = make_optimizer(schedule.optimizer, schedule.lr, schedule=schedule.lr_schedule,
                             total_steps=total_batches * schedule.updates_per_batch)
  state = init_query_state(noise_shape(config), optimizer, seed=config.seed)
  state["best"] = {"noise": state["noise"], "val_accuracy": np.asarray(-1.0, np.float32),
                   "batch": np.zeros((), np.int64), "images": np.zeros((), np.int64)}
  step = make_query_step(
      model, optimizer, lam=schedule.lam, kind=schedule.transform,
      class_term=schedule.class_term, estimator=query.estimator,
      num_directions=query.directions, scale=query.scale,
      share_directions=query.share_directions, images_per_step=query.images_per_step,
      focus=query.focus, true_gradient=true_gradient)
  selection = _Selection(config, model, sources["validation"])
  mngr, log_file = checkpoint.manager(run_dir / "checkpoints"), run_dir / "metrics.jsonl"
  if mngr.latest_step() is None:
    state, baseline = selection(state, 0)
    _log_baseline(log_file, baseline)
    checkpoint.save(mngr, 0, state, batches.get_state())

  def update(state, batch):
    for _ in range(schedule.updates_per_batch):
      state, metrics = step(state, batch)
    return state, metrics

  try:
    return loop.run_loop(
        state, batches, update, mngr=mngr, total_batches=total_batches,
        checkpoint_every=config.checkpoint_every // schedule.updates_per_batch,
        log_every=config.log_every // schedule.updates_per_batch, log_file=log_file,
        on_batches_done=selection,
        stop_when=_budget_stop(config, model, len(sources["validation"]), total_batches))
  except BaseException:
    _keep_spent(mngr, state, model)
    raise


def _keep_spent(mngr, like_state: DftState, model: BlackBox) -> None:
  """After a failure: the latest checkpoint's ledger takes every query spent since.

  The model counted them (answered calls, failures) on top of the ledger it was
  given at the start of the failed step; the resumed run then counts on from there.
  """
  restored = checkpoint.restore_latest(mngr, like_state)
  if restored is None:
    return
  saved, data_state = restored
  spent = {name: max(value, model.counts[name])
           for name, value in ledger_ints(saved["queries"]).items()}
  if spent != ledger_ints(saved["queries"]):
    step = mngr.latest_step()
    mngr.delete(step)
    checkpoint.save(mngr, step, {**saved, "queries": ledger_arrays(spent)}, data_state)


def write_query_curve(run_dir: Path) -> list[dict[str, float]]:
  """Validation accuracy against queries spent, from ``metrics.jsonl``.

  Writes ``queries.csv`` (columns :data:`CURVE_FIELDS`) and ``queries.png``;
  returns the rows.
  """
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  rows = [{field: record[field] for field in CURVE_FIELDS}
          for record in records if "val_accuracy" in record]
  write_csv(run_dir / "queries.csv", CURVE_FIELDS,
            [[row[field] for field in CURVE_FIELDS] for row in rows])
  save_queries_png(rows, run_dir / "queries.png")
  return rows

