"""Query-only DFT's rules: the settings check, the budget, and the selection on validation.

Everything sent to the model is counted in the state's ledger (``queries``:
calls, images, failures). The rules the noise phase follows:

1. the validation split is scored as it is (``N = 0``) before the first batch;
2. at each log the validation split is scored under the current noise and
   :func:`keep_best` keeps the best noise (a strictly higher validation accuracy
   replaces it, so ties keep ``N = 0``);
3. :func:`make_budget_stop` ends the phase when the next batch (and the
   validation after it, if due) would pass ``config.budget.queries`` images or
   ``config.budget.calls`` calls.

The noise a run keeps is the best on validation, never the last, so a tiny
training split over-fitted cannot leave validation worse than no noise at all.

Example::

  stop_when = make_budget_stop(config, model, validation_size=20,
                               validating=lambda done: done % 4 == 0)
  state, metrics = keep_best(state, accuracy=0.9, done=4, spent=Spent(1, 20))
"""
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dfm import estimators
from dfm.black_box.base import BlackBox, Spent, add_spent, fill_unknown
from dfm.query.step import check_images_per_step, images_per_batch
from dfm.dft import perturb_with_distance
from dfm.transform import Transform, get_transform
from dfm.types import Batch, QueryState

# Accuracies closer than this are equal: the best is kept in float32.
_SAME_ACCURACY = 1e-6


@dataclasses.dataclass
class SpentTally:
  """What an evaluation through a black box sent, summed over its batches.

  Owned by the caller that scores (one per scoring of a split), never by the model.
  """

  total: Spent = Spent()

  def add(self, spent: Spent) -> None:
    self.total = self.total + spent


def make_black_box_eval_step(model: BlackBox, *, transform: str | Transform,
                             tally: SpentTally) -> Callable:
  """An eval step ``(params, noise, batch) -> (probabilities, squared_error)`` that
  scores through ``model`` (``params`` unused), adding what it sends to ``tally``.

  Only the batch's real (unmasked) rows are sent, so padding costs no queries;
  top-k replies are completed by :func:`dfm.black_box.fill_unknown`.
  """
  perturbed_and_error = jax.jit(functools.partial(perturb_with_distance,
                                                  transform=get_transform(transform)))

  def eval_step(params: Any, noise: Any, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    del params
    images, keep = np.asarray(batch["image"]), np.asarray(batch["mask"]) > 0
    perturbed, error = (images, np.zeros(len(images), np.float32)) if noise is None else \
        jax.device_get(perturbed_and_error(images, noise))
    probabilities = np.zeros((len(images), model.num_classes), np.float32)
    reply = model.score(np.asarray(perturbed)[keep])
    tally.add(reply.spent)
    probabilities[keep] = fill_unknown(reply.probabilities)
    return probabilities, error

  return eval_step


def validation_cost(model: BlackBox, num_examples: int, batch_size: int) -> Spent:
  """``Spent(calls, images)`` of scoring a split of ``num_examples`` once."""
  calls = sum(model.calls_for(min(batch_size, num_examples - start))
              for start in range(0, num_examples, batch_size))
  return Spent(calls=calls, images=num_examples)


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
  check_images_per_step(query.images_per_step, query.directions)
  cost = validation_cost(model, validation_size, config.eval_batch_size)
  for field, needed in (("queries", cost.images), ("calls", cost.calls)):
    if budget[field] < 0 or 0 < budget[field] < needed:
      raise ValueError(
          f"config.budget.{field}={budget[field]} cannot pay for scoring the validation split "
          f"once ({needed} {'images' if field == 'queries' else 'calls'}), which selection "
          "needs: give 0 (no limit) or at least that.")


def keep_best(state: QueryState, *, accuracy: float, done: int,
              spent: Spent) -> tuple[QueryState, dict[str, float]]:
  """The state after scoring the validation split under its noise (``done`` 0: no noise).

  The ledger grows by ``spent`` (the scoring's cost); ``best`` becomes the current
  noise if its validation ``accuracy`` is strictly higher. Returns the state and
  the log's metrics: ``val_accuracy``, ``best_val_accuracy`` and the ledger.

  Example::

    state, metrics = keep_best(state, accuracy=0.9, done=0, spent=Spent(1, 20))
    metrics["best_val_accuracy"]  # 0.9: the first score always replaces -1
  """
  queries, best = add_spent(state["queries"], spent), state["best"]
  if accuracy > float(best["val_accuracy"]) + _SAME_ACCURACY:
    noise = jax.tree.map(jnp.zeros_like, state["noise"]) if done == 0 else state["noise"]
    best = {"noise": noise, "val_accuracy": np.asarray(accuracy, np.float32),
            "batch": np.asarray(done, np.int64), "images": queries["images"]}
  metrics = {"val_accuracy": accuracy, "best_val_accuracy": float(best["val_accuracy"]),
             **{f"queries_{name}": int(value) for name, value in queries.items()}}
  return {**state, "queries": queries, "best": best}, metrics


def make_budget_stop(config: ml_collections.ConfigDict, model: BlackBox, *,
                     validation_size: int,
                     validating: Callable[[int], bool]) -> Callable[[QueryState, int], bool]:
  """``stop_when(state, done)``: True when the next batch would pass the budget.

  ``validating(done)`` says whether the validation split is scored after batch
  ``done`` (its cost then counts too).
  """
  schedule, query = config.dft, config.query
  batch = images_per_batch(schedule.batch_size, query.directions, query.images_per_step)
  screened = batch if query.focus else 0  # Scored first under the current noise.
  probes = 2 * query.directions * batch
  step_images = (screened + probes) * schedule.updates_per_batch
  step_calls = (model.calls_for(screened) * bool(screened) + model.calls_for(probes)) \
      * schedule.updates_per_batch
  validation = validation_cost(model, validation_size, config.eval_batch_size)

  def stop_when(state: QueryState, done: int) -> bool:
    scored = validating(done + 1)
    images = int(state["queries"]["images"]) + step_images + scored * validation.images
    calls = int(state["queries"]["calls"]) + step_calls + scored * validation.calls
    over = (0 < config.budget.queries < images) or (0 < config.budget.calls < calls)
    if over:
      print(f"Query budget reached after batch {done}: {int(state['queries']['images'])} "
            f"images in {int(state['queries']['calls'])} calls spent.", flush=True)
    return over

  return stop_when
