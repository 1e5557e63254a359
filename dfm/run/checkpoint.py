"""Orbax checkpoints of a run: a state pytree plus the input pipeline's position."""
from pathlib import Path
from typing import Any

import jax
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
