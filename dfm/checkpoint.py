"""Orbax checkpoints of a run: a state pytree plus the input pipeline's position."""
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(directory: Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over the absolute ``directory``, created if missing."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Saves ``state`` and the data iterator's ``data_state`` at ``step``, synchronously."""
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, like_state: Any) -> tuple[Any, dict] | None:
  """Restores ``(state, data_state)`` of the latest step, or None if there is none.

  ``like_state`` gives the structure, shapes and dtypes to restore into.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  return restored["state"], restored["data"]


def _shape_mismatches(found: Any, expected: Any) -> list[str]:
  found_leaves = dict(jax.tree_util.tree_leaves_with_path(found))
  expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
  problems = []
  for path in sorted(set(found_leaves) | set(expected_leaves), key=str):
    name = jax.tree_util.keystr(path)
    a, b = found_leaves.get(path), expected_leaves.get(path)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
      shape_a = "absent" if a is None else tuple(a.shape)
      shape_b = "absent" if b is None else tuple(b.shape)
      problems.append(f"{name}: checkpoint {shape_a} vs config {shape_b}")
  return problems


def load_frozen_params(directory: Path, expected: Any) -> Any:
  """Loads the latest classifier params saved under ``directory`` (``{"params", ...}``).

  Args:
    directory: a classifier run's ``checkpoints`` folder.
    expected: the params tree the config's model has (e.g. from
      :func:`dfm.models.param_shapes`); every leaf's shape is checked against it.

  Raises:
    ValueError: no checkpoint there, or a checkpoint that does not fit the config.
  """
  directory = Path(directory).absolute()
  step = manager(directory).latest_step() if directory.is_dir() else None
  if step is None:
    raise ValueError(
        f"No classifier checkpoint in {directory}. Train one first with "
        "`python -m experiments.train_classifier --config=... --workdir=DIR` and pass "
        "--config.classifier_dir=DIR.")
  restored = ocp.StandardCheckpointer().restore(directory / str(step) / "state")
  if "params" not in restored:
    raise ValueError(
        f"The checkpoint in {directory} holds no classifier params (keys: {sorted(restored)}): "
        "pass the workdir of an experiments.train_classifier run.")
  params = jax.tree.map(np.asarray, restored["params"])
  problems = _shape_mismatches(params, expected)
  if problems:
    raise ValueError(
        f"The classifier checkpoint in {directory} does not fit config.model: "
        + "; ".join(problems[:5])
        + ". Use the config the classifier was trained with (its config.json).")
  return params
