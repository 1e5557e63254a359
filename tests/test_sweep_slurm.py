"""Declared sweeps, the SLURM launcher (submitit), its status and resubmission, and
collect on a partial sweep.

The launcher runs a real 2-point sweep through submitit's local executor (real
processes, real pickling): one point trains a tiny classifier, the other names a
dataset that is not prepared, so it passes the config checks and fails at run time.
The SLURM side is checked on the sbatch script submitit writes, with stand-ins for
``srun``, ``sbatch`` and ``sacct`` on the PATH.
"""
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from configs import digits
from configs.paper import intra
from dfm.studies import collect, manifest, sweep

submitit = pytest.importorskip("submitit", reason="the cluster extra: pip install -e '.[cluster]'")
from dfm.studies import slurm  # pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parent.parent
GRID = ["train.dataset=uci_digits,mnist5k"]  # mnist5k is not prepared: it fails at run time.
DONE, FAILED = "train.dataset=uci_digits/seed0", "train.dataset=mnist5k/seed0"


def _classifier_config(data_dir: str):
  """A tiny classifier on uci_digits, 1 epoch, with no checkpoint or validation midway."""
  config = intra.get_config("uci_digits,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.figures = False
    config.checkpoint_every = config.log_every = 1000
  return config


def _run_locally(config, root: Path) -> list:
  """The sweep of GRID through submitit's local executor; waits for its jobs."""
  jobs = []

  def launch(runs, root, **kwargs):
    jobs.extend(slurm.submit(runs, root, resources=slurm.Resources(), cluster="local", **kwargs))

  with pytest.MonkeyPatch.context() as env:  # The jobs reuse this session's compiled programs.
    env.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir or "")
    env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    sweep.sweep(config, str(root), GRID, seeds=1, experiment="train_classifier", launch=launch)
  while not all(job.done() for job in jobs):  # job.wait() polls once a second.
    time.sleep(0.1)
  return jobs


@pytest.fixture(scope="module")
def local_sweep(data_dir, tmp_path_factory):
  """The 2-point sweep, run once: its root, config and first jobs."""
  only_uci = tmp_path_factory.mktemp("only_uci_digits")
  (only_uci / "uci_digits").symlink_to(Path(data_dir) / "uci_digits")
  root = tmp_path_factory.mktemp("sweep")
  config = _classifier_config(str(only_uci))
  return root, config, _run_locally(config, root)


def test_status_lists_the_done_and_the_failed_run_with_its_error(local_sweep):
  root, _, jobs = local_sweep
  rows = {run: (state, job, error)
          for run, state, job, error in manifest.status(root, slurm.job_states)}
  assert rows[DONE] == ("done", jobs[0].job_id, "")
  assert rows[FAILED][:2] == ("failed", jobs[1].job_id)
  assert rows[FAILED][2].startswith("FileNotFoundError: Dataset 'mnist5k' is not prepared in")
  assert (root / DONE / "metrics.json").is_file() and not (root / FAILED / "metrics.json").exists()
  text = manifest.status_text(root, manifest.status(root, slurm.job_states))
  assert "2 runs: 1 done, 1 failed, 0 running, 0 missing." in text
  assert "launch the 1 failed or missing runs again" in text


def test_collect_names_the_runs_a_partial_sweep_lacks(local_sweep):
  root, _, _ = local_sweep
  with pytest.raises(ValueError, match="No finished") as error:
    collect.collect(str(root))  # A classifier's run is no DFT/MFT row.
  assert (f"Not in the table: 1 of the sweep's 2 runs" in str(error.value)
          and f"- {FAILED}: failed: FileNotFoundError: Dataset 'mnist5k'" in str(error.value))


def test_the_status_command_reads_the_manifest(local_sweep):
  root, _, _ = local_sweep
  result = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--workdir={root}",
                           "--status"], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  assert "1 done, 1 failed" in result.stdout and f"| {FAILED} | failed |" in result.stdout


def test_running_the_sweep_again_resubmits_only_the_failed_run(local_sweep):
  root, config, first = local_sweep
  finished_at = (root / DONE / "metrics.json").stat().st_mtime_ns
  again = _run_locally(config, root)
  assert len(again) == 1
  runs = manifest.read(root)["runs"]
  assert runs[DONE]["job"]["id"] == first[0].job_id and runs[DONE]["earlier_jobs"] == []
  assert runs[FAILED]["job"]["id"] == again[0].job_id
  assert runs[FAILED]["earlier_jobs"] == [first[1].job_id]
  assert (root / DONE / "metrics.json").stat().st_mtime_ns == finished_at
  assert dict((run, state) for run, state, _, _ in manifest.status(root, slurm.job_states)) == {
      DONE: "done", FAILED: "failed"}


def test_local_jobs_are_running_while_their_process_lives():
  assert slurm.job_states([{"cluster": "local", "id": str(os.getpid())}], Path(".")) == ["running"]
  finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True).stdout.strip()
  assert slurm.job_states([{"cluster": "local", "id": finished}], Path(".")) == ["failed"]


def _stand_ins(folder: Path, sacct_lines: str) -> None:
  """``srun``, ``sbatch`` (answers as SLURM does, job ids from 4242 up) and ``sacct``."""
  folder.mkdir()
  scripts = {"srun": "exit 0",
             "sbatch": (f'n=$(cat {folder}/n 2>/dev/null || echo 4242); echo $((n + 1)) > '
                        f'{folder}/n; echo "Submitted batch job $n"'),
             "sacct": f"printf 'JobID|State|NodeList\\n{sacct_lines}'"}
  for name, body in scripts.items():
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_job_array_script_status_and_resubmission(tmp_path, monkeypatch):
  _stand_ins(tmp_path / "bin", "4242_0|RUNNING|n1\\n4242_1|TIMEOUT|n2\\n")
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
  root = tmp_path / "sweep"
  resources = slurm.Resources(partition="gpu", gpus_per_task=1, cpus_per_task=4, mem_gb=8,
                              timeout_min=30, array_parallelism=1,
                              sbatch=("account=abc", "constraint=a100"))
  launch = lambda runs, root, **kwargs: slurm.submit(runs, root, resources=resources, **kwargs)
  config = digits.get_config("mnist5k_to_uci")
  sweep.sweep(config, str(root), ["dft.lam=0.01,0.1"], seeds=1, experiment="dft", launch=launch)
  script = (root / ".submitit" / "4242_submission.sh").read_text().splitlines()
  for line in ["#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1", "#SBATCH --array=0-1%1",
               "#SBATCH --time=30", "#SBATCH --mem=8GB", "#SBATCH --cpus-per-task=4",
               "#SBATCH --account=abc", "#SBATCH --constraint=a100", "#SBATCH --requeue", "#SBATCH --ntasks=1",
               "#SBATCH --signal=USR2@90", "#SBATCH --job-name=dfm-dft",
               f"#SBATCH --error={root}/.submitit/%A_%a_0_log.err"]:
    assert line in script, (line, script)
  runs = manifest.read(root)["runs"]
  assert [entry["job"]["id"] for entry in runs.values()] == ["4242_0", "4242_1"]
  (root / ".submitit" / "4242_1_0_log.err").write_text(
      "batch 3/5 ...\nslurmstepd: error: *** JOB 4243 CANCELLED DUE TO TIME LIMIT ***\n")
  assert manifest.status(root, slurm.job_states) == [
      ("dft.lam=0.01/seed0", "running", "4242_0", ""),
      ("dft.lam=0.1/seed0", "failed", "4242_1",
       "slurmstepd: error: *** JOB 4243 CANCELLED DUE TO TIME LIMIT ***")]
  sweep.sweep(config, str(root), ["dft.lam=0.01,0.1"], seeds=1, experiment="dft", launch=launch)
  runs = manifest.read(root)["runs"]
  assert runs["dft.lam=0.01/seed0"]["job"]["id"] == "4242_0"  # Running: not resubmitted.
  assert runs["dft.lam=0.1/seed0"]["job"]["id"] == "4243"
  assert runs["dft.lam=0.1/seed0"]["earlier_jobs"] == ["4242_1"]


def test_a_requeued_task_is_the_same_call():
  task, config = slurm.RunTask(), digits.get_config("mnist5k_to_uci")
  delayed = task.checkpoint("dft", config, "runs/s/p/seed0", 1)
  assert delayed.function is task and delayed.args == ("dft", config, "runs/s/p/seed0", 1)


def test_extra_sbatch_options_are_key_value_pairs():
  assert slurm.sbatch_options(("account=abc", "exclusive")) == {"account": "abc",
                                                                 "exclusive": True}
  with pytest.raises(ValueError, match="not KEY=VALUE or KEY"):
    slurm.sbatch_options(("--account=abc",))


def test_a_config_file_declares_its_sweep():
  declared = sweep.config_sweep("configs/digits.py:mnist5k_to_uci")
  assert len(declared) == 9 and declared[4] == {"dft.lam": 0.01, "dft.lr": 0.3}
  points = sweep.sweep_points(["dft.epochs=1,2"], declared)
  assert len(points) == 18 and points[1] == {"dft.lam": 0.003, "dft.lr": 0.1, "dft.epochs": "2"}
  with pytest.raises(ValueError, match=r"\['dft.lam'\] is both in the config's sweep"):
    sweep.sweep_points(["dft.lam=1"], declared)
  with pytest.raises(ValueError, match="defines no sweep"):
    sweep.config_sweep("configs/paper/inter.py:mnist5k-uci_digits")


def test_declared_points_are_typed_checked_and_named(tmp_path, capsys):
  config = digits.get_config("mnist5k_to_uci")
  points = sweep.declared_points(lambda add: (add({"dft.noise_shape": (7, 7, 1)}),
                                              add(**{"dft.lam": 0.1})))
  sweep.sweep(config, str(tmp_path), [], seeds=1, experiment="dft", declared=points,
              print_commands=True, config_arg="configs/digits.py:mnist5k_to_uci")
  lines = capsys.readouterr().out.splitlines()
  assert "--config.dft.noise_shape=(7,7,1)" in lines[0] and "/dft.noise_shape=(7,7,1)/" in lines[0]
  assert "--config.dft.lam=0.1 " in lines[1]
  with pytest.raises(ValueError, match="config.dft.lam=-1.0 must be >= 0"):
    sweep.sweep(config, str(tmp_path), [], seeds=1, experiment="dft",
                declared=sweep.declared_points(lambda add: add({"dft.lam": -1.0})))
  with pytest.raises(ValueError, match="Point dft.lam=\\[1\\]"):
    sweep.sweep(config, str(tmp_path), [], seeds=1, experiment="dft",
                declared=sweep.declared_points(lambda add: add({"dft.lam": [1]})))
  with pytest.raises(ValueError, match="declared no point"):
    sweep.declared_points(lambda add: None)
  assert not any(tmp_path.iterdir())
