"""Sweeps through Ray Tune on a real local Ray runtime: ASHA's early stop and the
stopped run's resume, Optuna's search. One Ray runtime (2 CPUs) serves the session."""
import json
from pathlib import Path

import jax
import pytest
import ray
from ray import tune

from configs.paper import intra
from dfm.run import methods, progress
from dfm.studies import collect, ray_tune, sweep

# The tiny classifier below: lr 0.3 keeps DFT's val accuracy at 13-15% over its 5
# logs, lr 100 saturates every image (10.3% from the first log on).
GOOD, BAD = "0.3", "100"
LOGS = 5  # DFT's 5 batches of 2 updates, one log each.


@pytest.fixture(scope="session")
def ray_runtime():
  """A local Ray of 2 CPUs whose workers share the suite's compilation cache."""
  cache = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  # No idle workers started ahead: trials need workers with this job's environment.
  ray_tune.init_ray("", num_cpus=2, include_dashboard=False, log_to_driver=False,
                    runtime_env={"env_vars": cache},
                    _system_config={"enable_worker_prestart": False,
                                    "prestart_worker_first_driver": False})
  yield
  ray.shutdown()


@pytest.fixture(scope="module")
def config(data_dir, tmp_path_factory):
  """test_paper's tiny UCI digits config, its classifier trained here; DFT logs every batch."""
  config = intra.get_config("uci_digits,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.classifier_dir = str(tmp_path_factory.mktemp("classifier"))
    config.figures = False
    config.checkpoint_every = config.log_every = 100  # The classifier: its end only.
    methods.train_classifier(config, config.classifier_dir)
    config.checkpoint_every = config.log_every = 2
  return config


def _runs(config, root, grid):
  return sweep.plan(config, root, sweep.points(sweep.parse_grid(grid)), seeds=1, experiment="dft")


def _options(**values):
  """One trial at a time (one Ray worker process, reused): on 2 cores, more
  at once only adds processes that import JAX."""
  options = ray_tune.ray_options()
  options.update({"max_concurrent_trials": 1, **values})
  return options


def _log(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_progress_goes_to_the_innermost_listener_only():
  heard = []
  progress.report({"batch": 0})  # No listener: nothing happens.
  with progress.reporting(lambda record: heard.append(("outer", record["batch"]))):
    with progress.reporting(lambda record: heard.append(("inner", record["batch"]))):
      progress.report({"batch": 1})
    progress.report({"batch": 2})
  progress.report({"batch": 3})
  assert heard == [("inner", 1), ("outer", 2)]


def test_every_worker_gets_the_trial_environment(ray_runtime):
  env = ray.get_runtime_context().runtime_env["env_vars"]  # Every worker's of this job.
  assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and "JAX_COMPILATION_CACHE_DIR" in env


def test_asha_stops_a_bad_point_early_and_its_trial_resumes_it(ray_runtime, config, tmp_path,
                                                                monkeypatch):
  runs = _runs(config, tmp_path, [f"dft.lr={GOOD},{BAD}"])
  good, bad = (workdir for _, _, workdir, _ in runs)
  # One trial at a time: the good point reaches every rung first.
  trials = ray_tune.run_on_ray(runs, root=tmp_path, experiment="dft", seeds=1,
                               options=_options(scheduler="asha", grace_period=1))
  assert [(t.workdir, t.finished, t.error) for t in trials] == [(good, True, None),
                                                                (bad, False, None)]
  assert trials[0].val_accuracy == [r["val_accuracy"] for r in _log(good)]
  assert len(trials[0].val_accuracy) == LOGS
  assert len(trials[1].val_accuracy) == 1 < LOGS and trials[1].val_accuracy[0] < min(
      trials[0].val_accuracy)
  # Stopped at its first report, after that batch's checkpoint: resumable, not collected.
  assert [r["batch"] for r in _log(bad)] == [1] and (bad / "checkpoints" / "1").is_dir()
  assert not (bad / "metrics.json").exists()
  assert f"dft.lr={BAD}" not in collect.collect(str(tmp_path))
  assert any((tmp_path / ".ray").glob("dft-*/trial_*/result.json"))

  # Both trials again, here (a Ray rerun costs a worker importing JAX), Tune's report
  # caught: the finished point reports its result once, the stopped one resumes.
  heard = []
  monkeypatch.setattr(tune, "report", heard.append)
  table = ray_tune.trial_table(runs)
  for name in table:
    ray_tune.trial({"run": name}, table=table, root=tmp_path, experiment="dft", seeds=1,
                   launch_dir=Path.cwd())
  assert [(r["run"], r.get("batch")) for r in heard] == [
      (f"dft.lr={GOOD}", None), *((f"dft.lr={BAD}", batch) for batch in range(2, LOGS + 1))]
  assert heard[0]["val_accuracy"] == trials[0].val_accuracy[-1]
  assert [r["batch"] for r in _log(bad)] == list(range(1, LOGS + 1))
  assert f"dft.lr={BAD}" in collect.collect(str(tmp_path))


def test_optuna_searches_the_space_within_its_budget(ray_runtime, config, tmp_path):
  runs = _runs(config, tmp_path, ["dft.lam=0.01,0.1"])
  trials = ray_tune.run_on_ray(runs, root=tmp_path, experiment="dft", seeds=1, options=_options(
      search="optuna", space="dft.lr=loguniform(0.01, 1)", num_samples=2))
  assert len(trials) == 2 and all(t.finished and len(t.val_accuracy) == LOGS for t in trials)
  for trial in trials:
    lam, lr = trial.workdir.parent.name.split(",")
    assert lam in ("dft.lam=0.01", "dft.lam=0.1")
    saved = json.loads((trial.workdir / "config.json").read_text())["dft"]
    assert f"dft.lr={saved['lr']:.6g}" == lr and 0.01 <= saved["lr"] <= 1


def test_bad_options_are_refused_before_anything_runs(config, tmp_path):
  runs = _runs(config, tmp_path, ["dft.lam=0.01,0.1"])
  cases = [({"scheduler": "hyperband"}, "use one of"),
           ({"scheduler": "asha", "reduction_factor": 1}, "at least 2"),
           ({"search": "optuna"}, "give both or neither"),
           ({"search": "optuna", "space": "dft.lr=normal(0,1)"}, "is not KEY=uniform"),
           ({"search": "optuna", "space": "dft.lr=loguniform(0,1)"}, "0 < LOW < HIGH"),
           ({"search": "optuna", "space": "dft.epochs=uniform(1,5)"}, "needs a float field"),
           ({"search": "optuna", "space": "dft.lamda=uniform(0,1)"}, "not in the config"),
           ({"search": "optuna", "space": "dft.lam=uniform(0,1)"}, "in both --grid")]
  for values, message in cases:
    with pytest.raises(ValueError, match=message):
      ray_tune.run_on_ray(runs, root=tmp_path, experiment="dft", seeds=1,
                          options=_options(**values))
  with pytest.raises(ValueError, match="drop --seeds"):
    ray_tune.run_on_ray(runs, root=tmp_path, experiment="dft", seeds=2,
                        options=_options(search="optuna", space="dft.lr=uniform(0.1,1)"))
  with pytest.raises(ValueError, match="cannot rank"):
    ray_tune.run_on_ray(runs, root=tmp_path, experiment="compare", seeds=1,
                        options=_options(scheduler="asha"))
  assert not any(tmp_path.iterdir())
