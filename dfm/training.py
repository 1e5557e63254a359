"""The training phases every entrypoint composes: fit the noise (DFT) or the weights.

Each phase runs the resumable :func:`dfm.loop.run_loop` in its own directory
(``checkpoints/`` and ``metrics.jsonl``), logging validation accuracy as it goes.
A finished phase restored from its last checkpoint costs no training, which is
how DFT+MFT resumes a round in the middle.
"""
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dfm import checkpoint, data, loop, runs
from dfm.classifier import init_train_state, make_train_step, restrict_to_layers
from dfm.dft import ApplyFn, init_state, make_update_step
from dfm.evaluate import make_eval_step
from dfm.optim import make_optimizer
from dfm.parallel import select_step
from dfm.transform import resize_noise
from dfm.xla import compiler_options


def noise_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """``config.dft.noise_shape`` (``()``: the image's shape), checked against the images."""
  shape = tuple(config.dft.noise_shape) or tuple(config.model.input_shape)
  resize_noise(np.zeros(shape, np.float32), tuple(config.model.input_shape))
  return shape


def _validation_log(config, apply_fn, kind: str, source, weights_and_noise):
  """``fn(state, done) -> (state, {"val_accuracy"})`` for :func:`dfm.loop.run_loop`."""
  eval_step = make_eval_step(apply_fn, kind=kind)

  def validation(state: Any, done: int) -> tuple[Any, dict[str, float]]:
    del done
    params, noise = weights_and_noise(state)
    report = runs.evaluate_split(eval_step, params, noise, source, config)
    return state, {"val_accuracy": report["accuracy"]}

  return validation


def train_batches(schedule: ml_collections.ConfigDict, source: Any, seed: int) -> tuple[Any, int]:
  """``(batches, total)``: the shuffled, checkpointable batches of ``schedule.epochs`` epochs."""
  batches = data.make_train_loader(source, batch_size=schedule.batch_size, seed=seed,
                                   num_epochs=schedule.epochs)
  return batches, data.num_batches(len(source), schedule.batch_size) * schedule.epochs


def fit_noise(config: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
              apply_fn: ApplyFn, params: Any, sources: dict[str, Any], run_dir: Path,
              *, noise: Any = None, data_seed: int | None = None) -> np.ndarray:
  """DFT: learns the noise on ``sources["train"]`` with ``params`` frozen.

  ``schedule`` is a ``config.dft``-like section; ``noise`` (default zero) is where
  the noise starts, e.g. the previous round's in DFT+MFT; ``data_seed`` (default
  ``config.seed``) sets the shuffle order. Returns the final noise on the host (the
  step may have placed it on several devices).
  """
  params = jax.device_get(params)  # Host arrays go to whichever devices the step uses.
  batches, total_batches = train_batches(schedule, sources["train"],
                                         config.seed if data_seed is None else data_seed)
  optimizer = make_optimizer(schedule.optimizer, schedule.lr, schedule=schedule.lr_schedule,
                             total_steps=total_batches * schedule.updates_per_batch)
  state = init_state(noise_shape(config), optimizer)
  if noise is not None:
    state["noise"] = jnp.asarray(noise, jnp.float32)
  step = select_step(schedule.parallel, lambda axis_name: make_update_step(
      apply_fn, optimizer, lam=schedule.lam, kind=schedule.transform,
      class_term=schedule.class_term, axis_name=axis_name))

  def update(state, batch):
    for _ in range(schedule.updates_per_batch):
      state, metrics = step(state, params, batch)
    return state, metrics

  state = loop.run_loop(
      state, batches, update, mngr=checkpoint.manager(run_dir / "checkpoints"),
      total_batches=total_batches,
      checkpoint_every=config.checkpoint_every // schedule.updates_per_batch,
      log_every=config.log_every // schedule.updates_per_batch,
      log_file=run_dir / "metrics.jsonl",
      on_batches_done=_validation_log(config, apply_fn, schedule.transform, sources["validation"],
                                      lambda state: (params, state["noise"])))
  return jax.device_get(state["noise"])


def fit_weights(config: ml_collections.ConfigDict, schedule: ml_collections.ConfigDict,
                apply_fn: ApplyFn, params: Any, sources: dict[str, Any], run_dir: Path,
                *, noise: Any = None, kind: str = "tanh", data_seed: int | None = None) -> Any:
  """Trains the weights from ``params`` on ``sources["train"]`` (pre-training or MFT).

  ``schedule`` is a ``config.train``/``config.mft``-like section; its optional
  ``layers`` (``all``/``head``) picks what moves. With a ``noise`` the weights fit
  the perturbed images (DFT+MFT). ``data_seed`` (default ``config.seed``) sets the
  shuffle order. ``params`` are copied, never consumed.
  Returns the final weights.
  """
  optimizer = restrict_to_layers(make_optimizer(schedule.optimizer, schedule.lr), params,
                                 schedule.get("layers", "all"))
  state = init_train_state(jax.tree.map(jnp.copy, params), optimizer)
  step = jax.jit(make_train_step(apply_fn, optimizer, kind=kind), donate_argnums=0,
                 compiler_options=compiler_options())
  batches, total_batches = train_batches(schedule, sources["train"],
                                         config.seed if data_seed is None else data_seed)
  state = loop.run_loop(
      state, batches, lambda state, batch: step(state, batch, noise),
      mngr=checkpoint.manager(run_dir / "checkpoints"), total_batches=total_batches,
      checkpoint_every=config.checkpoint_every, log_every=config.log_every,
      log_file=run_dir / "metrics.jsonl",
      on_batches_done=_validation_log(config, apply_fn, kind, sources["validation"],
                                      lambda state: (state["params"], noise)))
  return state["params"]
