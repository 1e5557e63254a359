"""The outer training loop shared by every entrypoint: resume, step, log, checkpoint.

What is updated (the DFT noise, or the classifier's weights) is the caller's
``update(state, batch) -> (state, metrics)``; this loop only orchestrates it over a
checkpointable batch iterator, so an interrupted run resumes exactly. It owns the
phase's log (``metrics.jsonl``, one record per log) and returns its records.

Ctrl-C ends the run at the end of the batch in progress (a second Ctrl-C at once),
with a checkpoint of the last finished batch: :class:`Interrupted` says so.
"""
import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from dfm import parallel
from dfm.run import checkpoint, progress

Update = Callable[[Any, dict], tuple[Any, dict]]
Record = dict[str, Any]


class Interrupted(KeyboardInterrupt):
  """Ctrl-C (a KeyboardInterrupt) in :func:`run_loop`, after the last finished batch
  was checkpointed; ``str()`` is the line to show, e.g.
  ``interrupted at batch 3 of 5; saved; rerun the same command to resume``.

  It keeps the attributes the KeyboardInterrupt carried (e.g. a query ledger).
  """


def is_due(done: int, every: int, total: int) -> bool:
  """True every ``every`` batches and at the last one (``every <= 0``: only the last)."""
  return done == total or (every > 0 and done % every == 0)


def _check_finite(metrics: dict[str, float], done: int) -> None:
  bad = [name for name, value in metrics.items() if not math.isfinite(value)]
  if bad:
    raise FloatingPointError(
        f"Non-finite {', '.join(bad)} after batch {done}: lower the learning rate "
        "(config.dft.lr or config.train.lr) or check the inputs.")


def _records_up_to(log_file: Path, done: int) -> list[Record]:
  """The log's records of batches up to ``done``; the file keeps only those (a
  resumed run logs the later batches again). Multi-host: process 0's alone."""
  if not parallel.is_main_process() or not log_file.exists():
    return []
  records = [json.loads(line) for line in log_file.read_text().splitlines()]
  kept = [record for record in records if record["batch"] <= done]
  if len(kept) != len(records):
    log_file.write_text("".join(json.dumps(record) + "\n" for record in kept))
  return kept


def _resume(state: Any, batches: Any, mngr: ocp.CheckpointManager) -> tuple[Any, int | None]:
  """The latest readable checkpoint's state and batch count (the data position
  restored too); ``None`` batches when there is none."""
  restored = checkpoint.restore_latest(mngr, state)
  if restored is None:
    return state, None
  done, state, data_state = restored
  batches.set_state(data_state)
  if done:
    print(f"Resumed from the checkpoint after batch {done}.", flush=True)
  return state, done


def _append(log_file: Path, record: Record) -> None:
  if not parallel.is_main_process():  # Multi-host: process 0 writes the log.
    return
  with log_file.open("a") as log:
    log.write(json.dumps(record) + "\n")


def _log_line(done: int, total: int, metrics: dict[str, float], started: float, first: int) -> dict:
  elapsed = time.perf_counter() - started
  per_batch = elapsed / max(done - first, 1)
  record = {"batch": done, "of": total, **metrics, "eta_s": round(per_batch * (total - done), 1)}
  shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
  print(f"batch {done}/{total} {shown} eta {record['eta_s']:.0f}s", flush=True)
  return record


def _after_batch(state: Any, metrics: dict, done: int, records: list[Record], *,
                 mngr: ocp.CheckpointManager, batches: Any, total: int,
                 cadence: tuple[int, int], log_file: Path,
                 on_batches_done: Callable[[Any, int], tuple[Any, dict]] | None,
                 clock: tuple[float, int]) -> Any:
  """Logs and checkpoints batch ``done`` when due; returns the state."""
  checkpoint_every, log_every = cadence
  log_now = is_due(done, log_every, total)
  save_now = is_due(done, checkpoint_every, total)
  if log_now or save_now:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_finite(values, done)
  if log_now:
    if on_batches_done is not None:
      state, extra = on_batches_done(state, done)
      values.update(extra)
    records.append(_log_line(done, total, values, *clock))
    _append(log_file, records[-1])
  if save_now:
    checkpoint.save(mngr, done, state, batches.get_state())
  if log_now:
    progress.report(records[-1])  # After the checkpoint: a listener may end the run.
  return state


@contextlib.contextmanager
def _ctrl_c_between_batches() -> Iterator[list[bool]]:
  """Yields a list that a first Ctrl-C appends to (the loop stops at the end of the
  batch, whose donated state would otherwise be lost); a second Ctrl-C raises
  KeyboardInterrupt at once. Off the main thread, or under another SIGINT handler
  than Python's, Ctrl-C raises as usual."""
  pending: list[bool] = []
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield pending
    return

  def handler(signum, frame):
    if pending:
      signal.default_int_handler(signum, frame)
    pending.append(True)

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield pending
  finally:
    signal.signal(signal.SIGINT, previous)


def _is_intact(state: Any) -> bool:
  """False if a step consumed (donated) any of the state's arrays."""
  return not any(isinstance(leaf, jax.Array) and leaf.is_deleted()
                 for leaf in jax.tree.leaves(state))


def _interrupted(mngr: ocp.CheckpointManager, last: tuple[int, Any, dict], total: int,
                 error: KeyboardInterrupt) -> Interrupted:
  """Checkpoints ``last = (done, state, data_state)``, the last finished batch, unless
  saved already; the :class:`Interrupted` to raise says which."""
  done, state, data_state = last
  with contextlib.suppress(Exception):
    mngr.wait_until_finished()  # A save the Ctrl-C cut short.
  mngr.reload()
  saved = mngr.latest_step() == done
  if not saved and _is_intact(state):
    with contextlib.suppress(Exception):
      checkpoint.save(mngr, done, state, data_state)
      saved = True
  latest = mngr.latest_step()
  outcome = "saved" if saved else (
      f"not saved (the batch in progress had consumed the state), last checkpoint "
      f"{'none' if latest is None else f'after batch {latest}'}")
  interrupted = Interrupted(
      f"interrupted at batch {done} of {total}; {outcome}; rerun the same command to resume")
  interrupted.__dict__.update(vars(error))
  return interrupted


def run_loop(
    state: Any,
    batches: Any,
    update: Update,
    *,
    mngr: ocp.CheckpointManager,
    total_batches: int,
    checkpoint_every: int,
    log_every: int,
    log_file: Path,
    on_batches_done: Callable[[Any, int], tuple[Any, dict]] | None = None,
    stop_when: Callable[[Any, int], bool] | None = None,
    log_start: bool = False,
    on_resume: Callable[[Any, int], Any] | None = None,
) -> tuple[Any, list[Record]]:
  """Runs ``update`` over ``batches`` until ``total_batches`` are done, resuming first.

  The host dispatches at most one batch ahead of the batch being computed (it waits
  for the previous batch's metrics), so batches queued by asynchronous dispatch do not
  pile up: peak memory does not grow with the number of batches.

  Args:
    state: the initial state (restored over from the latest checkpoint, if any).
    batches: a grain iterator with ``get_state``/``set_state``, whose n-th batch is
      the same on every run (its position is checkpointed with the state).
    update: the work done on one batch.
    mngr: where checkpoints go; the step number is the count of batches done.
    total_batches: batches in the whole run.
    checkpoint_every, log_every: cadence in batches (the last batch always counts).
    log_file: JSONL file that gets one record of metrics per log (each also goes to
      :func:`dfm.run.progress.report`, after that batch's checkpoint).
    on_batches_done: optional ``fn(state, done) -> (state, extra metrics)`` called
      at log time (e.g. validation accuracy; query-only DFT also counts its queries
      and keeps the best noise in the state).
    stop_when: optional ``fn(state, done) -> bool`` asked before each batch; True
      ends the run early (e.g. a query budget), with a checkpoint of that state.
    log_start: a fresh run first logs ``on_batches_done(state, 0)`` as batch 0 and
      checkpoints it (query-only DFT scores ``N = 0`` there).
    on_resume: optional ``fn(state, done) -> state`` applied to a restored state.

  Returns:
    The final state and the phase's log records, earlier runs' included.

  Raises:
    Interrupted: Ctrl-C (any KeyboardInterrupt in the loop), after a checkpoint of
      the last finished batch; the same call again resumes from it.
  """
  state, restored = _resume(state, batches, mngr)
  done = restored or 0
  records = _records_up_to(log_file, done) if restored is not None else []
  if restored is None:
    if parallel.is_main_process():
      log_file.unlink(missing_ok=True)
    if log_start and on_batches_done is not None:
      state, extra = on_batches_done(state, 0)
      records.append({"batch": 0, **extra})
      _append(log_file, records[-1])
      checkpoint.save(mngr, 0, state, batches.get_state())
  elif on_resume is not None:
    state = on_resume(state, done)
  first, started = done, time.perf_counter()
  last, in_flight = (done, state, batches.get_state()), None
  try:
    with _ctrl_c_between_batches() as ctrl_c:
      while done < total_batches:
        if ctrl_c:
          raise KeyboardInterrupt
        if stop_when is not None and stop_when(state, done):
          if mngr.latest_step() != done:
            checkpoint.save(mngr, done, state, batches.get_state())
          break
        state, metrics = update(state, next(batches))
        jax.block_until_ready(in_flight)  # Dispatch runs one batch ahead, not the epoch.
        in_flight, done = metrics, done + 1
        state = _after_batch(state, metrics, done, records, mngr=mngr, batches=batches,
                             total=total_batches, cadence=(checkpoint_every, log_every),
                             log_file=log_file, on_batches_done=on_batches_done,
                             clock=(started, first))
        last = (done, state, batches.get_state())
      if ctrl_c:  # Pressed during the last batch: the run stops here all the same.
        raise KeyboardInterrupt
  except KeyboardInterrupt as error:
    if jax.process_count() > 1:  # Saving is collective: the other processes may not come.
      raise
    raise _interrupted(mngr, last, total_batches, error) from error
  return state, records
