"""The outer training loop shared by every entrypoint: resume, step, log, checkpoint.

What is updated (the DFT noise, or the classifier's weights) is the caller's
``update(state, batch) -> (state, metrics)``; this loop only orchestrates it over a
checkpointable batch iterator, so an interrupted run resumes exactly. It owns the
phase's log (``metrics.jsonl``, one record per log) and returns its records.
"""
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from dfm.run import checkpoint

Update = Callable[[Any, dict], tuple[Any, dict]]
Record = dict[str, Any]


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
  resumed run logs the later batches again)."""
  if not log_file.exists():
    return []
  records = [json.loads(line) for line in log_file.read_text().splitlines()]
  kept = [record for record in records if record["batch"] <= done]
  if len(kept) != len(records):
    log_file.write_text("".join(json.dumps(record) + "\n" for record in kept))
  return kept


def _resume(state: Any, batches: Any, mngr: ocp.CheckpointManager) -> tuple[Any, int | None]:
  """The latest checkpoint's state and batch count (the data position restored too);
  ``None`` batches when there is no checkpoint."""
  restored = checkpoint.restore_latest(mngr, state)
  if restored is None:
    return state, None
  state, data_state = restored
  batches.set_state(data_state)
  done = mngr.latest_step()
  if done:
    print(f"Resumed from the checkpoint after batch {done}.", flush=True)
  return state, done


def _append(log_file: Path, record: Record) -> None:
  with log_file.open("a") as log:
    log.write(json.dumps(record) + "\n")


def _log_line(done: int, total: int, metrics: dict[str, float], started: float, first: int) -> dict:
  elapsed = time.perf_counter() - started
  per_batch = elapsed / max(done - first, 1)
  record = {"batch": done, "of": total, **metrics, "eta_s": round(per_batch * (total - done), 1)}
  shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
  print(f"batch {done}/{total} {shown} eta {record['eta_s']:.0f}s", flush=True)
  return record


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

  Args:
    state: the initial state (restored over from the latest checkpoint, if any).
    batches: a grain iterator with ``get_state``/``set_state``, whose n-th batch is
      the same on every run (its position is checkpointed with the state).
    update: the work done on one batch.
    mngr: where checkpoints go; the step number is the count of batches done.
    total_batches: batches in the whole run.
    checkpoint_every, log_every: cadence in batches (the last batch always counts).
    log_file: JSONL file that gets one record of metrics per log.
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
  """
  state, restored = _resume(state, batches, mngr)
  done = restored or 0
  records = _records_up_to(log_file, done) if restored is not None else []
  if restored is None:
    log_file.unlink(missing_ok=True)
    if log_start and on_batches_done is not None:
      state, extra = on_batches_done(state, 0)
      records.append({"batch": 0, **extra})
      _append(log_file, records[-1])
      checkpoint.save(mngr, 0, state, batches.get_state())
  elif on_resume is not None:
    state = on_resume(state, done)
  first, started = done, time.perf_counter()
  while done < total_batches:
    if stop_when is not None and stop_when(state, done):
      if mngr.latest_step() != done:
        checkpoint.save(mngr, done, state, batches.get_state())
      break
    state, metrics = update(state, next(batches))
    done += 1
    log_now = is_due(done, log_every, total_batches)
    save_now = is_due(done, checkpoint_every, total_batches)
    if log_now or save_now:
      values = {k: float(v) for k, v in jax.device_get(metrics).items()}
      _check_finite(values, done)
    if log_now:
      if on_batches_done is not None:
        state, extra = on_batches_done(state, done)
        values.update(extra)
      records.append(_log_line(done, total_batches, values, started, first))
      _append(log_file, records[-1])
    if save_now:
      checkpoint.save(mngr, done, state, batches.get_state())
  return state, records
