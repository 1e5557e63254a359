"""A sweep's manifest, ``ROOT/sweep.json``: what was launched, how, and where it stands.

Every launcher records each run it starts or submits: its folder below ROOT (the
key), point, seed, launcher and, for a submitted run, its job (scheduler, job id,
stderr log and result file, as paths below ROOT; earlier job ids are kept). A run
is **done** when its folder holds ``metrics.json`` (``compare.json`` for a compare);
**failed** when its job left an error (the last line of the traceback in submitit's
result file, else of the job's stderr log); else unfinished, which only the
scheduler can tell apart: **running** (queued, running, requeued) or **missing**
(never submitted, or its job is gone without a result).

Example::

  record(root, [(root / "dft.lam=0.1/seed0", {"dft.lam": "0.1"}, 0, None)],
         experiment="dft", seeds=1, launcher="local")
  print(status_text(root, status(root)))
"""
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dfm.report.tables import markdown_table

MANIFEST = "sweep.json"
FINISHED = ("metrics.json", "compare.json")  # A method's run; a compare point.
STATES = ("done", "failed", "running", "missing")
TAIL_BYTES = 16_384  # Enough of a log for its last lines.
# (jobs, root) -> each job's running | failed | missing, from the scheduler.
JobStates = Callable[[list[dict[str, Any]], Path], list[str]]


def read(root: Path) -> dict[str, Any] | None:
  """The manifest of the sweep in ``root``, or None when it has none."""
  path = Path(root) / MANIFEST
  return json.loads(path.read_text()) if path.is_file() else None


def record(root: Path, runs: list[tuple[Path, dict[str, Any], int, dict | None]], *,
           experiment: str, seeds: int, launcher: str) -> None:
  """Adds ``runs``, each ``(workdir, point as text, seed, job or None)``, to the manifest (runs
  recorded before keep their entry; a run recorded again keeps its earlier job ids)."""
  root = Path(root)
  root.mkdir(parents=True, exist_ok=True)
  found = read(root) or {"runs": {}}
  entries = found["runs"]
  for workdir, point, seed, job in runs:
    name = str(Path(workdir).relative_to(root))
    earlier = entries.get(name, {})
    history = earlier.get("earlier_jobs", []) + ([earlier["job"]["id"]] if earlier.get("job")
                                                 else [])
    entries[name] = {"point": point, "seed": seed,
                     "launcher": launcher, "job": job, "earlier_jobs": history}
  manifest = {"experiment": experiment, "seeds": seeds, "runs": entries}
  (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _last_line(text: str) -> str:
  return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def last_line(path: Path) -> str:
  """The last non-empty line of a text file ('' if it is missing or empty)."""
  if not path.is_file():
    return ""
  with path.open("rb") as file:
    file.seek(max(0, path.stat().st_size - TAIL_BYTES))
    return _last_line(file.read().decode(errors="replace"))


def job_error(root: Path, job: dict[str, Any] | None) -> str:
  """The last line of the traceback a job's result file holds ('' if it has none).

  submitit writes ``("error", traceback text)`` there when the function raised.
  """
  path = Path(root) / job["result"] if job else None
  if path is None or not path.is_file():
    return ""
  with path.open("rb") as file:
    kind, value = pickle.load(file)  # A tuple of plain values: no class is loaded.
  if kind != "error":
    return ""
  return _last_line(str(value))


def finished(workdir: Path) -> bool:
  """Whether the run in ``workdir`` has finished (its ``FINISHED`` file is there)."""
  return any((Path(workdir) / marker).is_file() for marker in FINISHED)


def status(root: Path, job_states: JobStates | None = None) -> list[tuple[str, str, str, str]]:
  """``(run, state, job id, last error line)`` of every run in the manifest.

  ``job_states(jobs, root)`` asks the scheduler, in one call, about the submitted
  runs that have neither finished nor left an error; without it they count as
  missing.

  Raises:
    FileNotFoundError: ``root`` holds no manifest.
  """
  manifest = read(root)
  if manifest is None:
    raise FileNotFoundError(f"{Path(root) / MANIFEST} does not exist: pass the --workdir of a "
                            "sweep (python -m experiments.sweep writes it).")
  rows, asked = [], []
  for name, entry in manifest["runs"].items():
    job = entry.get("job")
    error = job_error(root, job)
    state = "done" if finished(Path(root) / name) else "failed" if error else "missing"
    if state == "missing" and job and job_states:
      asked.append((len(rows), job))
    rows.append([name, state, job["id"] if job else "", "" if state == "done" else error])
  states = job_states([job for _, job in asked], Path(root)) if asked else []
  for (index, job), state in zip(asked, states):
    rows[index][1] = state
    if state == "failed":
      rows[index][3] = last_line(Path(root) / job["log"]) or "the job ended without a result"
  return [tuple(row) for row in rows]


def counts(rows: list[tuple[str, str, str, str]]) -> str:
  """E.g. ``"2 runs: 1 done, 1 failed, 0 running, 0 missing"``."""
  states = [state for _, state, _, _ in rows]
  return f"{len(rows)} runs: " + ", ".join(f"{states.count(s)} {s}" for s in STATES)


def status_text(root: Path, rows: list[tuple[str, str, str, str]]) -> str:
  """The status table, with what to do about runs that failed or are missing."""
  text = f"Sweep {Path(root).absolute()}: {counts(rows)}.\n\n" + markdown_table(
      ["run", "state", "job", "last error line"], [list(row) for row in rows])
  redo = sum(state in ("failed", "missing") for _, state, _, _ in rows)
  if redo:
    text += (f"\n\nRerun the same sweep command to launch the {redo} failed or missing runs "
             "again; done, queued and running runs are skipped.")
  return text


def unfinished_text(root: Path) -> str:
  """For ``collect``: the manifest's runs that have not finished, with their errors
  ('' when there is no manifest or every run is done)."""
  if read(root) is None:
    return ""
  rows = [row for row in status(root) if row[1] != "done"]
  if not rows:
    return ""
  lines = [f"- {name}: {'failed: ' + error if state == 'failed' else 'not finished'}"
           for name, state, _, error in rows]
  return (f"Not in the table: {len(rows)} of the sweep's {len(read(root)['runs'])} runs "
          f"(from {MANIFEST}; `python -m experiments.sweep --workdir={root} --status` asks "
          "the scheduler which are still running):\n" + "\n".join(lines))
