"""The training phases every method composes: fit the noise (DFT) or the weights.

Each phase runs the resumable :func:`dfm.run.loop.run_loop` in its own directory
(``checkpoints/`` and ``metrics.jsonl``), logging validation accuracy as it goes.
White-box and query-only DFT share one noise phase (:func:`_noise_phase`): the
same schedule, the ``updates_per_batch`` steps on each batch, the cadences; only
the step (autodiff or estimates) and what is logged at validation differ.
:func:`fit_noises` trains K white-box settings at once on one pass of the data. A
finished phase restored from its last checkpoint costs no training, which is how
DFT+MFT resumes a round in the middle.
"""
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dfm import data, parallel
from dfm.black_box.base import BlackBox, Spent, ledger_ints, spent_of
from dfm.dft import (OptimizerOf, init_stacked_state, init_state, make_stacked_update_step,
                     make_update_step)
from dfm.models.training import init_train_state, make_train_step, restrict_to_layers
from dfm.optim import clocked_optimizer, make_optimizer
from dfm.query import (DISTILL, STRATEGIES, Candidate, SelectionRule, SpentTally, StudentOptions,
                       TrueGradient, estimate_options, init_query_state, keep_best,
                       make_black_box_eval_step, make_budget_stop, make_distill_step,
                       make_evolution_step, make_query_step, with_ledger)
from dfm.query.budget import batches_budget_pays, budget_learning_rate, budget_share, has_budget
from dfm.report.scores import summarize
from dfm.run import checkpoint, loop
from dfm.run.evaluate import EvalStep, evaluate_split, make_eval_step, score_split
from dfm.run.settings import per_setting_metrics
from dfm.transform import resize_noise
from dfm.types import ApplyFn, QueryState
from dfm.xla import compiler_options

# What a query-only run had spent when it failed, beside the checkpoint it resumes from.
FAILED_LEDGER = "queries_at_failure.json"


def noise_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """``config.dft.noise_shape`` (``()``: the image's shape), checked against the images."""
  shape = tuple(config.dft.noise_shape) or tuple(config.model.input_shape)
  resize_noise(np.zeros(shape, np.float32), tuple(config.model.input_shape))
  return shape


def train_batches(schedule: ml_collections.ConfigDict, source: Any, seed: int) -> tuple[Any, int]:
  """``(batches, total)``: the shuffled, checkpointable batches of ``schedule.epochs`` epochs."""
  batches = data.make_train_loader(source, batch_size=schedule.batch_size, seed=seed,
                                   num_epochs=schedule.epochs)
  return batches, data.num_batches(len(source), schedule.batch_size) * schedule.epochs


def _optimizer_of(schedule: ml_collections.ConfigDict, total_batches: int) -> OptimizerOf:
  """``lr -> optimizer`` of a noise phase, its schedule spanning every update
  (``updates_per_batch`` per batch)."""
  return lambda lr: make_optimizer(schedule.optimizer, lr, schedule=schedule.lr_schedule,
                                   total_steps=total_batches * schedule.updates_per_batch)


def _noise_schedule(schedule: ml_collections.ConfigDict, source: Any,
                    seed: int) -> tuple[Any, int, optax.GradientTransformation]:
  """``(batches, total batches, optimizer)`` of a noise phase at ``schedule.lr``."""
  batches, total_batches = train_batches(schedule, source, seed)
  return batches, total_batches, _optimizer_of(schedule, total_batches)(schedule.lr)


def _validation_log(config: ml_collections.ConfigDict, eval_step: EvalStep, source: Any,
                    weights_and_noise: Callable[[Any], tuple[Any, Any]]):
  """``fn(state, done) -> (state, {"val_accuracy"})`` for :func:`dfm.run.loop.run_loop`."""
  def validation(state: Any, done: int) -> tuple[Any, dict[str, float]]:
    del done
    params, noise = weights_and_noise(state)
    return state, {"val_accuracy": evaluate_split(eval_step, params, noise, source,
                                                  config)["accuracy"]}
  return validation


def _noise_phase(config: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
                 state: Any, step: Callable, batches: Any, total_batches: int, run_dir: Path,
                 **hooks: Any) -> tuple[Any, list[dict]]:
  """The noise phase of both DFTs: ``schedule.updates_per_batch`` steps on each
  batch, checkpoints and logs every ``config.checkpoint_every``/``log_every``
  steps; ``hooks`` go to :func:`dfm.run.loop.run_loop`."""
  def update(state, batch):
    for _ in range(schedule.updates_per_batch):
      state, metrics = step(state, batch)
    return state, metrics

  return loop.run_loop(
      state, batches, update, mngr=checkpoint.manager(run_dir / "checkpoints"),
      total_batches=total_batches,
      checkpoint_every=config.checkpoint_every // schedule.updates_per_batch,
      log_every=config.log_every // schedule.updates_per_batch,
      log_file=run_dir / "metrics.jsonl", **hooks)


def fit_noise(config: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
              apply_fn: ApplyFn, params: Any, sources: dict[str, Any], run_dir: Path,
              *, noise: Any = None, data_seed: int | None = None) -> np.ndarray:
  """White-box DFT: learns the noise on ``sources["train"]`` with ``params`` frozen.

  ``schedule`` is a ``config.dft``-like section; ``noise`` (default zero) is where
  the noise starts, e.g. the previous round's in DFT+MFT; ``data_seed`` (default
  ``config.seed``) sets the shuffle order. The params and the state are placed
  on the device(s) once (:func:`dfm.parallel.place`). Returns the final noise on
  the host.
  """
  batches, total_batches, optimizer = _noise_schedule(
      schedule, sources["train"], config.seed if data_seed is None else data_seed)
  start = jnp.zeros(noise_shape(config), jnp.float32) if noise is None else jnp.asarray(
      noise, jnp.float32)
  state = parallel.place(init_state(start, optimizer), schedule.parallel)
  params = parallel.place(params, schedule.parallel)
  step = parallel.select_step(schedule.parallel, lambda axis_name: make_update_step(
      apply_fn, optimizer, lam=schedule.lam, transform=schedule.transform,
      class_term=schedule.class_term, axis_name=axis_name))
  validation = _validation_log(config, make_eval_step(apply_fn, transform=schedule.transform),
                               sources["validation"], lambda state: (params, state["noise"]))
  state, _ = _noise_phase(config, schedule, state, lambda s, b: step(s, params, b), batches,
                          total_batches, run_dir, on_batches_done=validation)
  return jax.device_get(state["noise"])


def fit_noises(config: ml_collections.ConfigDict, settings: list[tuple[float, float]],
               apply_fn: ApplyFn, params: Any, sources: dict[str, Any],
               run_dir: Path) -> tuple[np.ndarray, list[dict]]:
  """White-box DFT of K ``settings`` ``(lam, lr)`` at once, in one program.

  :func:`fit_noise` with the state stacked on a leading axis of size K and the step
  vmapped over it (:func:`dfm.dft.make_stacked_update_step`): one pass of the data
  (``config.seed``'s order) feeds all K, every noise starts at zero, and one
  checkpoint holds the stacked state. Step metrics and validation accuracy are
  logged per setting (``loss_k0``, ``val_accuracy_k0``, ...; :mod:`dfm.run.settings`).
  Returns the K final noises on the host ([K, *noise shape]) and the log records.
  """
  schedule = config.dft
  batches, total_batches = train_batches(schedule, sources["train"], config.seed)
  optimizer_of = _optimizer_of(schedule, total_batches)
  lams, lrs = (jnp.asarray(values, jnp.float32) for values in zip(*settings))
  start = jnp.zeros(noise_shape(config), jnp.float32)
  state = parallel.place(init_stacked_state(start, optimizer_of, lrs), schedule.parallel)
  params = parallel.place(params, schedule.parallel)

  def make_step(axis_name: str | None) -> Callable:
    stacked = make_stacked_update_step(
        apply_fn, optimizer_of, lams=lams, lrs=lrs, transform=schedule.transform,
        class_term=schedule.class_term, axis_name=axis_name)

    def step(state: Any, params: Any, batch: dict) -> tuple[Any, dict]:
      state, metrics = stacked(state, params, batch)
      return state, per_setting_metrics(metrics)

    return step

  step = parallel.select_step(schedule.parallel, make_step)
  eval_step = make_eval_step(apply_fn, transform=schedule.transform)

  def validation(state: Any, done: int) -> tuple[Any, dict[str, float]]:
    del done
    accuracies = [evaluate_split(eval_step, params, state["noise"][k], sources["validation"],
                                 config)["accuracy"] for k in range(len(settings))]
    return state, per_setting_metrics({"val_accuracy": accuracies})

  state, records = _noise_phase(config, schedule, state, lambda s, b: step(s, params, b),
                                batches, total_batches, run_dir, on_batches_done=validation)
  return jax.device_get(state["noise"]), records


def _record_failure(run_dir: Path, error: BaseException, last_seen: dict) -> None:
  """Writes what a failed run spent beside the checkpoint it will resume from: the
  ledger the error carries, or the last one a step or a selection returned."""
  latest = checkpoint.manager(run_dir / "checkpoints").latest_step()
  if latest is None:
    return
  spent = ledger_ints(last_seen)
  carried = getattr(error, "ledger", None)
  if carried is not None:
    spent = {name: max(value, int(carried[name])) for name, value in spent.items()}
  (run_dir / FAILED_LEDGER).write_text(json.dumps({"after_batch": latest, "queries": spent}) + "\n")


def _drop_chosen_after(run_dir: Path, state: QueryState) -> None:
  """Removes the noises kept after the ledger of ``state`` (another attempt's, past the
  checkpoint it resumes from)."""
  for path in (run_dir / CHOSEN_DIR).glob("*.npy"):
    if int(path.stem) > int(state["queries"]["images"]):
      path.unlink()


def _count_failed(run_dir: Path) -> Callable[[QueryState, int], QueryState]:
  """``on_resume``: a restored ledger takes what a failed run spent after its
  checkpoint (whose kept noises past the checkpoint are dropped)."""
  def on_resume(state: QueryState, done: int) -> QueryState:
    _drop_chosen_after(run_dir, state)
    path = run_dir / FAILED_LEDGER
    record = json.loads(path.read_text()) if path.exists() else None
    if record is None or record["after_batch"] != done:
      return state
    queries = {name: np.maximum(value, np.int64(record["queries"][name]))
               for name, value in state["queries"].items()}
    return {**state, "queries": queries}
  return on_resume


def _remembering_ledger(fn: Callable, last_seen: dict) -> Callable:
  """``fn(state, ...) -> (state, metrics)`` that keeps the ledger of each state it
  returns in ``last_seen``: what a failure outside a query still has to count."""
  def remembered(state: QueryState, *args: Any) -> tuple[QueryState, dict]:
    state, metrics = fn(state, *args)
    last_seen.update(state["queries"])
    return state, metrics
  return remembered


CHOSEN_DIR = "chosen"  # Each noise selection kept, as <images spent>.npy.


def _select_on_validation(config: ml_collections.ConfigDict, model: BlackBox, source: Any,
                          run_dir: Path):
  """``on_batches_done`` of query-only DFT: scores the validation split through the
  model (``done`` 0: no noise), counts it in the ledger, keeps the best noise by
  ``config.query``'s significance level and PSNR floor, and writes each noise kept
  to ``chosen/<images spent>.npy`` (the curve of what a budget buys)."""
  tally = SpentTally()
  eval_step = make_black_box_eval_step(model, transform=config.dft.transform, tally=tally)
  rule = SelectionRule(level=config.query.significance, min_psnr=config.query.min_psnr,
                       against=config.query.significant_against)

  def selection(state: QueryState, done: int) -> tuple[QueryState, dict[str, float]]:
    tally.total = Spent()
    noise = None if done == 0 else state["noise"]
    try:
      scores = score_split(eval_step, None, noise, source, config)
    except BaseException as error:
      raise with_ledger(error, state["queries"], tally.total + spent_of(error))
    psnr = summarize(scores, num_classes=config.model.num_classes,
                     perturbed=noise is not None).get("psnr_db", math.inf)
    state, metrics = keep_best(state, Candidate(scores.predictions == scores.labels, psnr),
                               done=done, spent=tally.total, rule=rule)
    if done and int(state["best"]["batch"]) == done and parallel.is_main_process():
      (run_dir / CHOSEN_DIR).mkdir(exist_ok=True)
      np.save(run_dir / CHOSEN_DIR / f"{int(state['best']['images']):09d}.npy",
              np.asarray(state["best"]["noise"]))
    return state, metrics

  return selection


def _query_schedule(config: ml_collections.ConfigDict, model: BlackBox, sources: dict[str, Any]
                    ) -> tuple[Any, int, optax.GradientTransformation, Callable | None]:
  """``(batches, total batches, optimizer, learning_rate_at)`` of a query-only run.

  With a budget, the data repeat until it is spent and the learning rate follows
  the share spent (:mod:`dfm.query.budget`); without, ``config.dft.epochs`` and
  the step-count schedule apply.
  """
  schedule = config.dft
  if not has_budget(config):  # Each step makes updates_per_estimate updates.
    batches, total = train_batches(schedule, sources["train"], config.seed)
    optimizer_of = _optimizer_of(schedule, total * config.query.updates_per_estimate)
    return batches, total, optimizer_of(schedule.lr), None
  total = batches_budget_pays(config, model, len(sources["validation"]), len(sources["train"]))
  per_epoch = data.num_batches(len(sources["train"]), schedule.batch_size)
  batches = data.make_train_loader(sources["train"], batch_size=schedule.batch_size,
                                   seed=config.seed, num_epochs=-(-total // per_epoch))

  def learning_rate_at(state: QueryState) -> float:
    return budget_learning_rate(schedule.lr, schedule.lr_schedule,
                                budget_share(config, state["queries"]))

  return batches, total, clocked_optimizer(schedule.optimizer, schedule.lr), learning_rate_at


def _query_step(config: ml_collections.ConfigDict, model: BlackBox, optimizer: Any,
                validation_size: int, **step_options: Any) -> tuple[Callable, QueryState]:
  """``(step, initial state)``: an estimated-gradient step or an evolution strategy's."""
  schedule, query = config.dft, config.query
  zeros = jnp.zeros(noise_shape(config), jnp.float32)
  student = step_options.pop("student", None)
  if query.estimator in STRATEGIES:
    step, init = make_evolution_step(
        model, lam=schedule.lam, strategy=query.estimator, population=2 * query.directions,
        scale=query.scale, like=zeros, frequencies=query.frequencies, learning_rate=schedule.lr,
        transform=schedule.transform, class_term=schedule.class_term,
        images_per_step=query.images_per_step)
    return step, init(config.seed, validation_size)
  if query.estimator == DISTILL:
    step, init = make_distill_step(
        model, optimizer, lam=schedule.lam, student=student,
        image_shape=tuple(config.model.input_shape), like=zeros,
        options=StudentOptions(**query.student, updates=query.updates_per_estimate),
        transform=schedule.transform, class_term=schedule.class_term,
        learning_rate_at=step_options["learning_rate_at"])
    return step, init(config.seed, validation_size)
  step = make_query_step(
      model, optimizer, lam=schedule.lam, options=estimate_options(query),
      transform=schedule.transform, class_term=schedule.class_term,
      images_per_step=query.images_per_step, focus=query.focus, **step_options)
  return step, init_query_state(zeros, optimizer, seed=config.seed,
                                validation_size=validation_size)


def fit_noise_by_queries(config: ml_collections.ConfigDict, model: BlackBox,
                         sources: dict[str, Any], run_dir: Path, *,
                         true_gradient: TrueGradient | None = None,
                         prior_gradient: TrueGradient | None = None,
                         student: tuple[ApplyFn, Any] | None = None
                         ) -> tuple[QueryState, list[dict]]:
  """Query-only DFT on ``sources["train"]``, selected on ``sources["validation"]``.

  The rules are :mod:`dfm.query.selection`'s: ``N = 0`` scored first (batch 0),
  a noise kept only when it gains significantly on validation, a stop before the
  budget is passed (the budget is also the schedule's clock). An exception
  carries the ledger up to it (``error.ledger``), which is written beside the
  last checkpoint so the resumed run counts on from there.
  Returns the final state (``best``: the chosen noise; ``queries``: the ledger)
  and the phase's log records. ``true_gradient`` (JAX models only) logs the
  estimate's cosine with the true gradient; ``prior_gradient`` is a surrogate's;
  ``student`` (``apply_fn``, ``params``) the model ``estimator='distill'`` distils.
  """
  schedule = config.dft
  batches, total_batches, optimizer, learning_rate_at = _query_schedule(config, model, sources)
  step, state = _query_step(config, model, optimizer, len(sources["validation"]),
                            true_gradient=true_gradient, prior_gradient=prior_gradient,
                            student=student,
                            learning_rate_at=learning_rate_at)
  log_every = config.log_every // schedule.updates_per_batch
  stop_when = make_budget_stop(
      config, model, validation_size=len(sources["validation"]),
      validating=lambda done: loop.is_due(done, log_every, total_batches))
  if checkpoint.manager(run_dir / "checkpoints").latest_step() is None:
    (run_dir / FAILED_LEDGER).unlink(missing_ok=True)  # Another attempt's, never resumed.
    shutil.rmtree(run_dir / CHOSEN_DIR, ignore_errors=True)
  last_seen = dict(state["queries"])
  selection = _select_on_validation(config, model, sources["validation"], run_dir)
  try:
    return _noise_phase(
        config, schedule, state, _remembering_ledger(step, last_seen), batches, total_batches,
        run_dir, on_batches_done=_remembering_ledger(selection, last_seen),
        stop_when=stop_when, log_start=True, on_resume=_count_failed(run_dir))
  except BaseException as error:
    _record_failure(run_dir, error, last_seen)
    raise


def fit_weights(config: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
                apply_fn: ApplyFn, params: Any, sources: dict[str, Any], run_dir: Path,
                *, noise: Any = None, transform: str = "tanh",
                data_seed: int | None = None) -> Any:
  """Trains the weights from ``params`` on ``sources["train"]`` (pre-training or MFT).

  ``schedule`` is a ``config.train``/``config.mft``-like section; its optional
  ``layers`` (``all``/``head``/``output``) picks what moves. With a ``noise`` the weights fit
  the perturbed images (DFT+MFT). ``data_seed`` (default ``config.seed``) sets the
  shuffle order. ``params`` are copied, never consumed.
  Returns the final weights.
  """
  optimizer = restrict_to_layers(make_optimizer(schedule.optimizer, schedule.lr), params,
                                 schedule.get("layers", "all"),
                                 num_classes=config.model.num_classes)
  state = parallel.place(init_train_state(jax.tree.map(jnp.copy, params), optimizer), "single")
  noise = None if noise is None else parallel.place(noise, "single")
  compiled = jax.jit(make_train_step(apply_fn, optimizer, transform=transform),
                     donate_argnums=0, compiler_options=compiler_options())
  batches, total_batches = train_batches(schedule, sources["train"],
                                         config.seed if data_seed is None else data_seed)
  validation = _validation_log(config, make_eval_step(apply_fn, transform=transform),
                               sources["validation"], lambda state: (state["params"], noise))
  state, _ = loop.run_loop(
      state, batches, lambda state, batch: compiled(state, jax.device_put(batch), noise),
      mngr=checkpoint.manager(run_dir / "checkpoints"), total_batches=total_batches,
      checkpoint_every=config.checkpoint_every, log_every=config.log_every,
      log_file=run_dir / "metrics.jsonl", on_batches_done=validation)
  return state["params"]
