"""Running one DFT update step on one device or data-parallel over several.

Three wrappers around the same pure step of :func:`dfm.dft.make_update_step`, all
with the signature ``step(state, params, batch) -> (state, metrics)``:

- :func:`jit_step`: one device.
- :func:`sharded_jit_step`: ``jax.jit`` with ``NamedSharding`` over a ``("data",)``
  mesh; the batch is split along its first axis, state and params are replicated.
  The mesh may span several processes (``jax.distributed``; multi-host): each
  process then passes only its rows of the global batch.
- :func:`pmap_step`: ``jax.pmap`` over the devices; gradients averaged with
  ``psum`` weighted by each device's real examples.
"""
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dfm.types import Batch, PyTree, UpdateStep
from dfm.xla import compiler_options

DATA_AXIS = "data"
PARALLEL_MODES = ("auto", "single", "sharded", "pmap")


def jit_step(step: UpdateStep) -> UpdateStep:
  """Compiles ``step`` once for one device; the state's buffers are donated.

  The batch is put on the device explicitly; state and params are expected
  there already (:func:`place`), so a step copies nothing else from the host.

  Example::

    step = jit_step(make_update_step(apply_fn, optax.adam(1e-2), lam=0.01))
    state, metrics = step(state, params, batch)  # ``state`` is consumed
  """
  compiled = jax.jit(step, donate_argnums=0, compiler_options=compiler_options())
  return lambda state, params, batch: compiled(state, params, jax.device_put(batch))


def is_main_process() -> bool:
  """True in the process that writes a run's files: process 0 of a multi-host run
  (``jax.process_index() == 0``), or the only process.

  Example::

    is_main_process()  # True
  """
  return jax.process_index() == 0


def _check_divisible(batch: Batch, num_devices: int) -> None:
  """``batch`` holds this process's rows; every process holds as many (one share per device)."""
  size = batch["label"].shape[0] * jax.process_count()
  if size % num_devices:
    raise ValueError(
        f"A batch of {size} examples does not split evenly over {num_devices} devices: "
        f"set config.dft.batch_size to a multiple of {num_devices}.")


def global_batch(batch: Batch, sharding: NamedSharding) -> Batch:
  """The global batch, split by rows over ``sharding``, of which this process holds ``batch``.

  Process ``p`` of ``P`` passes rows ``[p * B / P, (p + 1) * B / P)`` of the global
  batch of ``B`` rows (:func:`dfm.data.make_train_loader` reads just those); in one
  process ``batch`` is the whole batch. Each row goes to the device that holds it
  (``jax.make_array_from_process_local_data``); nothing crosses hosts.

  Example::

    by_example = NamedSharding(data_mesh(), PartitionSpec("data"))
    global_batch({"image": x, "label": y}, by_example)["label"].shape  # (8,)
  """
  _check_divisible(batch, sharding.mesh.size)
  return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch)


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh named ``"data"`` over ``devices`` (default: all).

  Example::

    data_mesh().shape  # {"data": jax.device_count()}
  """
  return Mesh(np.asarray(devices or jax.devices()), (DATA_AXIS,))


def sharded_jit_step(step: UpdateStep, mesh: Mesh) -> UpdateStep:
  """Compiles ``step`` with the batch sharded over ``mesh``'s ``"data"`` axis.

  Example::

    step = sharded_jit_step(make_update_step(apply_fn, opt, lam=0.01), data_mesh())
    state, metrics = step(state, params, batch)  # batch size divisible by devices
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  by_example = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  compiled = jax.jit(
      step,
      in_shardings=(replicated, replicated, by_example),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
      compiler_options=compiler_options(),
  )

  def run(state, params, batch):
    return compiled(state, params, global_batch(batch, by_example))

  return run


def pmap_step(make_step: Callable[[str], UpdateStep], devices: list[jax.Device] | None = None) -> UpdateStep:
  """Runs the step under ``jax.pmap``, one slice of the batch per device.

  ``make_step(axis_name)`` must build the step with that ``axis_name`` so that it
  averages gradients across devices, e.g.
  ``lambda axis: make_update_step(apply_fn, opt, lam=0.01, axis_name=axis)``.
  State and params go in whole (:func:`place` replicates them once) and come out
  whole; the batch is cut into ``len(devices)`` equal slices along its first axis.

  Example::

    step = pmap_step(lambda axis: make_update_step(apply_fn, opt, lam=0.01, axis_name=axis))
    state, metrics = step(state, params, batch)  # batch size divisible by devices
  """
  devices = devices or jax.devices()
  mapped = jax.pmap(
      make_step(DATA_AXIS), axis_name=DATA_AXIS, devices=devices,
      in_axes=(None, None, 0), out_axes=(None, None))

  def run(state, params, batch):
    _check_divisible(batch, len(devices))
    split = jax.tree.map(lambda a: a.reshape((len(devices), -1) + a.shape[1:]), batch)
    return mapped(state, params, split)

  return run


def resolve_mode(mode: str) -> str:
  """``mode`` with ``auto`` made concrete: ``sharded`` over several devices, else ``single``.

  Several processes (multi-host) run ``sharded`` only: ``single`` and ``pmap`` are
  refused with the fix.
  """
  if mode not in PARALLEL_MODES:
    raise ValueError(f"Unknown parallel mode {mode!r}; choose one of {PARALLEL_MODES}.")
  if jax.process_count() > 1 and mode in ("single", "pmap"):
    raise ValueError(
        f"Parallel mode {mode!r} runs in one process, but this run has "
        f"{jax.process_count()}: set config.dft.parallel to 'sharded' or 'auto'.")
  if mode == "auto":
    return "sharded" if jax.device_count() > 1 else "single"
  return mode


def place(tree: PyTree, mode: str) -> PyTree:
  """Puts ``tree`` (the frozen params, a state) once where the steps of ``mode`` read it:
  replicated over the ``"data"`` mesh of all devices for ``sharded`` and ``pmap``
  (whose replicated outputs live there too), else committed to the first device,
  like every output of a single-device step, so the step compiles once. Replicas
  are made from the host's copy: a multi-host run puts each host's own copy (the
  same on every host) on that host's devices.

  Example::

    params = place(params, "sharded")   # every step then reads it where it is
  """
  if resolve_mode(mode) in ("sharded", "pmap"):
    return jax.device_put(jax.device_get(tree), NamedSharding(data_mesh(), PartitionSpec()))
  return jax.device_put(tree, jax.devices()[0])


def select_step(mode: str, make_step: Callable[[str | None], UpdateStep]) -> UpdateStep:
  """The compiled step for ``mode``: ``single``, ``sharded``, ``pmap`` or ``auto``.

  ``auto`` is ``sharded`` over all devices when there are several, else ``single``.
  ``make_step(axis_name)`` builds the pure step (``axis_name`` is None except
  under ``pmap``).
  """
  mode = resolve_mode(mode)
  if mode == "single":
    return jit_step(make_step(None))
  if mode == "sharded":
    return sharded_jit_step(make_step(None), data_mesh())
  return pmap_step(make_step)
