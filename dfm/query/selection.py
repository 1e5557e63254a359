"""Query-only DFT's rules: the settings check, the budget, and the selection on validation.

Everything sent to the model is counted in the state's ledger (``queries``:
calls, images, failures). The rules the noise phase follows:

1. the validation split is scored as it is (``N = 0``) before the first batch;
2. at each log the validation split is scored under the current noise and
   :func:`keep_best` keeps the best noise: a noise replaces the one kept (at first
   ``N = 0``) only when it gains significantly on the same validation images
   (:func:`significant_gain`, an exact one-sided McNemar test at level
   ``config.query.significance``, over ``N = 0`` or over the noise kept:
   ``config.query.significant_against``; level 0 turns it off: any strictly
   higher accuracy replaces) and its validation PSNR is at least
   ``config.query.min_psnr``;
3. :func:`make_budget_stop` ends the phase when the next batch (and the
   validation after it, if due) would pass ``config.budget.queries`` images or
   ``config.budget.calls`` calls.

The noise a run keeps is the best on validation, never the last, so a tiny
training split over-fitted cannot leave validation worse than no noise at all.

Example::

  stop_when = make_budget_stop(config, model, validation_size=20,
                               validating=lambda done: done % 4 == 0)
  state, metrics = keep_best(state, Candidate(correct, psnr_db=30.0), done=4,
                             spent=Spent(1, 20), rule=SelectionRule(0.05))
"""
import dataclasses
import fractions
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dfm import estimators
from dfm.black_box.base import BlackBox, Spent, add_spent, fill_unknown
from dfm.query.evolution import STRATEGIES
from dfm.query.step import (DISTILL, PRIORS, EstimateOptions, check_images_per_step,
                            images_per_batch)
from dfm.dft import perturb_with_distance
from dfm.transform import Transform, get_transform
from dfm.types import Batch, QueryState

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


QUERY_ESTIMATORS = (*estimators.ESTIMATORS, *STRATEGIES, DISTILL)


def estimate_options(query: ml_collections.ConfigDict) -> EstimateOptions:
  """``config.query`` as the step's :class:`dfm.query.step.EstimateOptions`."""
  return EstimateOptions(
      estimator=query.estimator, num_directions=query.directions, scale=query.scale,
      share_directions=query.share_directions, frequencies=query.frequencies,
      prior=query.prior, lookahead=query.lookahead,
      updates_per_estimate=query.updates_per_estimate)


def has_surrogate(query: ml_collections.ConfigDict) -> bool:
  """Whether ``config.query.surrogate`` names a model: a dfm classifier's folder, or a
  model of another kind (which names its own files)."""
  return (bool(query.surrogate.classifier_dir)
          or query.surrogate.model.get("kind", "vgg") != "vgg")


def _check_student(query: ml_collections.ConfigDict) -> None:
  """``estimator='distill'``: a student to distil, sane settings, no estimate options."""
  if not has_surrogate(query):
    raise ValueError("config.query.estimator='distill' needs a student model: set "
                     "config.query.surrogate.classifier_dir (a dfm classifier) or "
                     "config.query.surrogate.model (any kind the model registry loads).")
  student = query.student
  if min(student.steps, student.batch_size, student.replay) < 1 or not student.lr > 0:
    raise ValueError(f"config.query.student needs steps, batch_size and replay >= 1 and "
                     f"lr > 0, got {student.to_dict()}.")
  if (query.prior != "none" or query.focus or query.lookahead or query.cosine
      or query.frequencies or query.images_per_step):
    raise ValueError("config.query.estimator='distill' scores each batch image once: prior, "
                     "focus, lookahead, cosine, frequencies and images_per_step apply to spsa "
                     "and nes only; set them to none, 0, 0, False, 0 and 0 (a smaller "
                     "config.dft.batch_size sends fewer images a step).")


def _check_estimator(query: ml_collections.ConfigDict) -> None:
  if query.estimator not in QUERY_ESTIMATORS:
    raise ValueError(f"config.query.estimator={query.estimator!r} is not one of "
                     f"{QUERY_ESTIMATORS}.")
  if query.directions < 1 or not query.scale > 0:
    raise ValueError(f"config.query needs directions >= 1 and scale > 0, got "
                     f"{query.directions} and {query.scale}.")
  if query.prior not in PRIORS:
    raise ValueError(f"config.query.prior={query.prior!r} is not one of {PRIORS}.")
  if query.estimator in STRATEGIES and (
      query.prior != "none" or query.focus or query.lookahead or query.cosine
      or query.updates_per_estimate != 1 or not query.share_directions):
    raise ValueError(f"config.query.estimator={query.estimator!r} is an evolution strategy: "
                     "prior, focus, lookahead, cosine, updates_per_estimate and "
                     "share_directions apply to spsa and nes only; set them to none, 0, 0, "
                     "False, 1 and True.")
  if query.estimator == DISTILL:
    _check_student(query)
  if query.prior != "none" and not query.share_directions:
    raise ValueError(f"config.query.prior={query.prior!r} needs "
                     "config.query.share_directions=True (one prior for the batch).")
  if query.prior == "surrogate" and not has_surrogate(query):
    raise ValueError("config.query.prior='surrogate' needs a surrogate model: set "
                     "config.query.surrogate.classifier_dir (a dfm classifier) or "
                     "config.query.surrogate.model (any kind the model registry loads).")
  if query.frequencies < 0 or not 0 <= query.lookahead < 1 or query.updates_per_estimate < 1:
    raise ValueError(f"config.query needs frequencies >= 0 (0: pixels), 0 <= lookahead < 1 "
                     f"and updates_per_estimate >= 1, got {query.frequencies}, "
                     f"{query.lookahead} and {query.updates_per_estimate}.")
  if not 0 <= query.focus <= 1:
    raise ValueError(f"config.query.focus={query.focus} must be in [0, 1] (0: probe every image).")
  if query.significant_against not in SIGNIFICANT_AGAINST:
    raise ValueError(f"config.query.significant_against={query.significant_against!r} is "
                     f"not one of {SIGNIFICANT_AGAINST}.")
  if not 0 <= query.significance < 1:
    raise ValueError(f"config.query.significance={query.significance} must be in [0, 1) "
                     "(0: any higher validation accuracy replaces the noise kept).")


def check_query(config: ml_collections.ConfigDict, model: BlackBox, validation_size: int) -> None:
  """Checks ``config.query`` and ``config.budget`` before a single query is sent.

  The budget must at least pay for scoring the validation split once: ``N = 0``
  is always a candidate of the selection.

  Raises:
    ValueError: naming the field and what it must be.
  """
  query, budget = config.query, config.budget
  _check_estimator(query)
  check_images_per_step(query.images_per_step, estimate_options(query).probes_per_image)
  cost = validation_cost(model, validation_size, config.eval_batch_size)
  for field, needed in (("queries", cost.images), ("calls", cost.calls)):
    if budget[field] < 0 or 0 < budget[field] < needed:
      raise ValueError(
          f"config.budget.{field}={budget[field]} cannot pay for scoring the validation split "
          f"once ({needed} {'images' if field == 'queries' else 'calls'}), which selection "
          "needs: give 0 (no limit) or at least that.")


def batch_cost(config: ml_collections.ConfigDict, model: BlackBox, *,
               smallest_batch: int = 0) -> Spent:
  """``Spent(calls, images)`` of one batch at the most, or (``smallest_batch``: the
  fewest real images a batch holds) at the least: with ``focus``, its screening
  plus one image probed."""
  schedule, query = config.dft, config.query
  probes_per_image = estimate_options(query).probes_per_image
  batch = images_per_batch(smallest_batch or schedule.batch_size, probes_per_image,
                           query.images_per_step)
  cheapest = bool(smallest_batch)
  screened = batch if query.focus else 0  # Scored first under the current noise.
  probes = probes_per_image * (1 if cheapest and query.focus else batch)
  calls = model.calls_for(screened) * bool(screened) + model.calls_for(probes)
  return Spent(calls=calls * schedule.updates_per_batch,
               images=(screened + probes) * schedule.updates_per_batch)


SIGNIFICANT_AGAINST = ("zero", "kept")


@dataclasses.dataclass(frozen=True)
class SelectionRule:
  """When a scored noise replaces the one kept: a validation PSNR of at least
  ``min_psnr`` dB (0: no floor) and a gain significant at ``level`` (0: any
  strictly higher accuracy) over ``N = 0`` with more images right than the noise
  kept (``against="zero"``), or significant over the noise kept (``"kept"``,
  stricter: a better noise may wait for a clear margin)."""

  level: float = 0.05
  min_psnr: float = 0.0
  against: str = "zero"

  def replaces(self, best: dict, candidate: "Candidate") -> bool:
    """Whether ``candidate`` replaces ``best`` (a state's ``best``)."""
    if candidate.psnr_db < self.min_psnr:
      return False
    if self.against == "kept":
      return significant_gain(best["correct"], candidate.correct, self.level)
    return (significant_gain(best["zero_correct"], candidate.correct, self.level)
            and int(np.sum(candidate.correct)) > int(np.sum(best["correct"])))


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A scored noise: which validation images it gets right (in split order) and
  its validation PSNR (``inf`` for ``N = 0``)."""

  correct: np.ndarray
  psnr_db: float = math.inf

  @property
  def accuracy(self) -> float:
    return float(np.mean(self.correct))


def mcnemar_p_value(kept: np.ndarray, new: np.ndarray) -> float:
  """One-sided exact McNemar p-value that ``new`` is right on more images than ``kept``.

  With ``b`` images only ``new`` gets right and ``c`` only ``kept`` does, under
  no difference ``b ~ Binomial(b + c, 1/2)``: ``p = P(X >= b)``. A tie gives
  ``p >= 0.5``; one image gained and none lost gives ``p = 0.5``.

  Example::

    mcnemar_p_value(np.array([1, 0, 0, 0, 0]), np.array([1, 1, 1, 1, 1]))  # 1/16
  """
  kept, new = np.asarray(kept, bool), np.asarray(new, bool)
  gained, lost = int(np.sum(new & ~kept)), int(np.sum(kept & ~new))
  n = gained + lost
  return float(fractions.Fraction(sum(math.comb(n, k) for k in range(gained, n + 1)), 2 ** n))


def significant_gain(kept: np.ndarray, new: np.ndarray, level: float) -> bool:
  """True when ``new`` beats ``kept`` on the same images: McNemar's ``p < level``
  (``level`` 0: any strictly higher count of correct images)."""
  if level <= 0:
    return int(np.sum(new)) > int(np.sum(kept))
  return mcnemar_p_value(kept, new) < level


def keep_best(state: QueryState, candidate: Candidate, *, done: int, spent: Spent,
              rule: SelectionRule) -> tuple[QueryState, dict[str, float]]:
  """The state after scoring the validation split under its noise (``done`` 0: no noise).

  The ledger grows by ``spent`` (the scoring's cost). The first score (``N = 0``)
  is always kept (and its images right, ``zero_correct``); later, the current
  noise replaces ``best`` when :meth:`SelectionRule.replaces` says so. Returns the
  state and the log's metrics: ``val_accuracy``, ``val_psnr_db`` (with a noise),
  ``best_val_accuracy`` and the ledger.

  Example::

    state, metrics = keep_best(state, Candidate(np.ones(20, bool)), done=0,
                               spent=Spent(1, 20), rule=SelectionRule())
    metrics["best_val_accuracy"]  # 1.0: N = 0 is always the first kept
  """
  queries, best = add_spent(state["queries"], spent), state["best"]
  first = float(best["val_accuracy"]) < 0
  if first or rule.replaces(best, candidate):
    noise = jax.tree.map(jnp.zeros_like, state["noise"]) if done == 0 else state["noise"]
    correct = np.asarray(candidate.correct, bool)
    best = {"noise": noise, "val_accuracy": np.asarray(candidate.accuracy, np.float32),
            "correct": correct, "zero_correct": correct if first else best["zero_correct"],
            "batch": np.asarray(done, np.int64), "images": queries["images"]}
  metrics = {"val_accuracy": candidate.accuracy, "best_val_accuracy": float(best["val_accuracy"]),
             **({"val_psnr_db": candidate.psnr_db} if done else {}),
             **{f"queries_{name}": int(value) for name, value in queries.items()}}
  return {**state, "queries": queries, "best": best}, metrics


def make_budget_stop(config: ml_collections.ConfigDict, model: BlackBox, *,
                     validation_size: int,
                     validating: Callable[[int], bool]) -> Callable[[QueryState, int], bool]:
  """``stop_when(state, done)``: True when the next batch would pass the budget.

  ``validating(done)`` says whether the validation split is scored after batch
  ``done`` (its cost then counts too).
  """
  step = batch_cost(config, model)
  validation = validation_cost(model, validation_size, config.eval_batch_size)

  def stop_when(state: QueryState, done: int) -> bool:
    scored = validating(done + 1)
    images = int(state["queries"]["images"]) + step.images + scored * validation.images
    calls = int(state["queries"]["calls"]) + step.calls + scored * validation.calls
    over = (0 < config.budget.queries < images) or (0 < config.budget.calls < calls)
    if over:
      print(f"Query budget reached after batch {done}: {int(state['queries']['images'])} "
            f"images in {int(state['queries']['calls'])} calls spent.", flush=True)
    return over

  return stop_when
