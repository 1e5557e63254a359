"""Orbax checkpoints of a run: a state pytree plus the input pipeline's position.

A step that cannot be read back (a truncated or scribbled file, a missing item) is
moved aside into ``<checkpoints>/corrupt/`` (never deleted) and the previous step is
restored instead; a save that runs out of disk space raises one ``OSError(ENOSPC)``
that names the checkpoint and the fix.

Multi-host (``jax.distributed``): every process calls :func:`manager`, :func:`save`
and :func:`restore_latest` alike; orbax writes each array once, process 0 the
metadata and the data position, and process 0 alone moves a corrupt step aside.
"""
import contextlib
import errno
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from dfm import parallel

CORRUPT = "corrupt"  # Not a number, so orbax never lists it as a step.
_DISK_FULL = ("No space left on device", "Disk quota exceeded")


def manager(directory: Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over the absolute ``directory``, created if missing.

  Half-written steps of an earlier save (``*.orbax-checkpoint-tmp``, e.g. after a
  full disk) are removed, so the same step can be saved again.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options)


@contextlib.contextmanager
def _library_logs_muted() -> Iterator[None]:
  """Mutes what orbax's threads log while a save fails: the error raised from
  :func:`save` says it all in one line."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


def _is_closed_loop(error: BaseException | None) -> bool:
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _mute_closed_loop_reports() -> None:
  """Orbax's futures and threads report a closed event loop (one traceback each) when
  a save fails or the process ends after one; the error raised says it all. Only
  that report is dropped (idempotent); every other error still reaches its hook."""
  if getattr(sys.unraisablehook, "drops_closed_loop", False):
    return
  unraisable_hook, thread_hook = sys.unraisablehook, threading.excepthook

  def quiet_unraisable(unraisable: Any) -> None:
    if not _is_closed_loop(unraisable.exc_value):
      unraisable_hook(unraisable)

  def quiet_thread(args: Any) -> None:
    if not _is_closed_loop(args.exc_value):
      thread_hook(args)

  quiet_unraisable.drops_closed_loop = True
  sys.unraisablehook, threading.excepthook = quiet_unraisable, quiet_thread


def _mute_orphaned_save() -> None:
  """After a failed save, orbax's leftover threads still log; other libraries' logs
  are kept."""
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  logging.getLogger("absl").addFilter(lambda record: "orbax" not in record.pathname)


def _is_disk_full(error: BaseException) -> bool:
  return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
      text in str(error) for text in _DISK_FULL)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Saves ``state`` and the data iterator's ``data_state`` at ``step``, synchronously.

  Raises:
    OSError: ``errno.ENOSPC``, the disk is full; its message names the step, the
      folder and the fix (free space, then rerun to resume from the last checkpoint).

  Example::

    save(manager(run_dir / "checkpoints"), 8, state, batches.get_state())
  """
  _mute_closed_loop_reports()
  with _library_logs_muted():
    try:
      mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))
      mngr.wait_until_finished()
    except Exception as error:
      if not _is_disk_full(error):
        raise
      _mute_orphaned_save()
      raise OSError(errno.ENOSPC, (
          f"No space left on device to save checkpoint {step} in {mngr.directory}: free "
          "some space (or pass a --workdir on a larger disk) and rerun the same command; "
          "it resumes from the last checkpoint")) from None


def _one_line(error: BaseException, limit: int = 160) -> str:
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def move_aside(directory: Path, step: int) -> Path:
  """Moves step folder ``directory/<step>`` to ``directory/corrupt/<step>`` (``<step>-2``,
  ``<step>-3``... if taken) and returns where it went; nothing is deleted."""
  target = directory / CORRUPT / str(step)
  count = 1
  while target.exists():
    count += 1
    target = directory / CORRUPT / f"{step}-{count}"
  target.parent.mkdir(exist_ok=True)
  os.rename(directory / str(step), target)
  return target


def _restore(mngr: ocp.CheckpointManager, step: int, abstract: Any) -> tuple[Any, dict]:
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  if restored.get("data") is None:
    raise FileNotFoundError("its data/ item (the input pipeline's position) is missing")
  return restored["state"], restored["data"]


def restore_latest(mngr: ocp.CheckpointManager, like_state: Any) -> tuple[int, Any, dict] | None:
  """``(step, state, data_state)`` of the latest readable step, or None if there is none.

  ``like_state`` gives the structure, shapes and dtypes to restore into. A step that
  fails to restore is moved aside (:func:`move_aside`) and the one before is tried,
  with one line printed per step moved, e.g.
  ``Checkpoint 8 in DIR is unreadable (ValueError: ...); moved to DIR/corrupt/8;
  resuming from checkpoint 6.``
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  directory = Path(mngr.directory)
  failed = []
  restored = None
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = (step, *_restore(mngr, step, abstract))
      break
    except Exception as error:  # Whatever the damage, the step cannot be resumed from.
      failed.append((step, _one_line(error)))
  if not failed:
    return restored
  moved = [(step, reason, move_aside(directory, step))
           for step, reason in failed if parallel.is_main_process()]
  ocp.multihost.sync_global_processes(f"dfm moved aside {directory} {[step for step, _ in failed]}")
  mngr.reload()
  target = f"resuming from checkpoint {restored[0]}" if restored else "starting from scratch"
  for step, reason, place in moved:
    print(f"Checkpoint {step} in {directory} is unreadable ({reason}); moved to {place}; "
          f"{target}.", flush=True)
  return restored
