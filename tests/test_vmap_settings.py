"""K DFT settings in one run (config.dft.lams/lrs): equal to K separate runs, resumable,
read by collect as K runs, and refused where they cannot run."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from dfm import data, models
from dfm.dft import init_stacked_state, init_state, make_stacked_update_step, make_update_step
from dfm.optim import make_optimizer
from dfm.parallel import place, select_step
from dfm.run import checkpoint, loop, methods, phases
from dfm.run.checks import check_schedule
from dfm.run.evaluate import evaluate_split, make_eval_step
from dfm.run.settings import settings_of
from dfm.studies.collect import find_runs
from tests.test_experiments import REPO, _config, _dft_config, _interrupt_after, _Interrupted

# K = 3 learning rates in the run; lam varies too in the step's own test.
LAMS, LRS = (0.01,), (0.1, 0.3, 1.0)
NAMES = ["dft.lam=0.01,dft.lr=0.1", "dft.lam=0.01,dft.lr=0.3", "dft.lam=0.01,dft.lr=1.0"]


@pytest.fixture(scope="module")
def classifier_dir(data_dir, tmp_path_factory):
  """A runlocal classifier trained on the small uci_digits (DFT's target too): quick."""
  config = _config("mnist5k", data_dir=data_dir)
  config.train.dataset = "uci_digits"
  workdir = tmp_path_factory.mktemp("classifier")
  methods.train_classifier(config, str(workdir))
  return str(workdir)


def _k_config(data_dir, classifier_dir):
  """5 batches of 2 updates; checkpoints after batches 2, 4 and 5, validation after 5."""
  config = _dft_config(data_dir, classifier_dir, lams=LAMS, lrs=LRS)
  with config.unlocked():
    config.checkpoint_every, config.log_every = 4, 10
  return config


@pytest.fixture(scope="module")
def k_run(data_dir, classifier_dir, tmp_path_factory):
  """``(workdir, results)`` of a run of the 3 settings, stopped before batch 4 (its last
  checkpoint: batch 2) and resumed."""
  workdir = tmp_path_factory.mktemp("k_run")
  config = _k_config(data_dir, classifier_dir)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop, "run_loop", _interrupt_after(3, loop.run_loop))
    with pytest.raises(_Interrupted):
      methods.dft(config, str(workdir))
  assert checkpoint.manager(workdir / "checkpoints").latest_step() == 2
  assert not (workdir / NAMES[0] / "noise.npy").exists()
  return workdir, methods.dft(config, str(workdir))


SHAPE, SETTINGS = (6, 6, 1), [(0.01, 0.1), (0.1, 0.3), (1.0, 0.03)]


@pytest.fixture(scope="module")
def small():
  """``(apply_fn, params, batch, optimizer_of)``: a small model, its batch, cosine Adam."""
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.normal(size=(36, 3)), jnp.float32)
  apply_fn = lambda params, images: jnp.tanh(images.reshape(len(images), -1) @ params)
  batch = {"image": rng.uniform(size=(16, *SHAPE)).astype(np.float32),
           "label": rng.integers(0, 3, 16).astype(np.int32)}
  return apply_fn, params, batch, lambda lr: make_optimizer("adam", lr, schedule="cosine",
                                                            total_steps=3)


def _stacked_steps(small, mode: str = "single", steps: int = 3) -> tuple[dict, dict]:
  apply_fn, params, batch, optimizer_of = small
  lams, lrs = (jnp.asarray(v) for v in zip(*SETTINGS))
  step = select_step(mode, lambda axis: make_stacked_update_step(
      apply_fn, optimizer_of, lams=lams, lrs=lrs, axis_name=axis))
  state = place(init_stacked_state(jnp.zeros(SHAPE), optimizer_of, lrs), mode)
  for _ in range(steps):
    state, metrics = step(state, place(params, mode), batch)
  return state, metrics


def test_the_stacked_step_equals_k_separate_steps(small):
  """Three (lam, lr) settings, three steps of a small model: the vmapped step's noises
  and metrics equal each setting's own step (the runs below use a VGG)."""
  apply_fn, params, batch, optimizer_of = small
  state, metrics = _stacked_steps(small)
  alone = jax.jit(lambda state, lam, lr: make_update_step(apply_fn, optimizer_of(lr), lam=lam)(
      state, params, batch))
  for k, (lam, lr) in enumerate(SETTINGS):
    single = init_state(jnp.zeros(SHAPE), optimizer_of(lr))
    for _ in range(3):
      single, single_metrics = alone(single, lam, lr)
    np.testing.assert_allclose(state["noise"][k], single["noise"], atol=1e-5)
    for name, value in single_metrics.items():
      np.testing.assert_allclose(metrics[name][k], value, rtol=1e-4, atol=1e-6)
  assert int(state["step"][0]) == 3
  with pytest.raises(ValueError, match="one lam and one lr per setting"):
    make_stacked_update_step(apply_fn, optimizer_of, lams=jnp.ones(3), lrs=jnp.ones(2))


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_the_stacked_step_runs_data_parallel(small, mode):
  """Over the 4 simulated devices, batch split: the noises of one device."""
  single, _ = _stacked_steps(small, steps=2)
  parallel, _ = _stacked_steps(small, mode, steps=2)
  np.testing.assert_allclose(parallel["noise"], single["noise"], atol=1e-6)


def _frozen(config):
  apply_fn, params = models.load_frozen_classifier(config)
  return apply_fn, params, data.open_splits(config.dft.dataset, config.data_dir,
                                            config.model.input_shape)


def _log(path: Path) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if k != "eta_s"}
          for line in path.read_text().splitlines()]


def test_settings_are_named_and_configured_as_separate_runs():
  config = _k_config("data", "runs/classifier")
  settings = settings_of(config)
  assert [s.name for s in settings] == NAMES
  single = _dft_config("data", "runs/classifier", lam=0.01, lr=0.3)
  with single.unlocked():
    single.checkpoint_every, single.log_every = 4, 10
  assert settings[1].config.to_json(sort_keys=True) == single.to_json(sort_keys=True)
  with config.unlocked():
    config.dft.update(lams=(), lrs=(0.1, 0.3))
  assert [s.name for s in settings_of(config)] == ["dft.lr=0.1", "dft.lr=0.3"]
  with config.unlocked():
    config.dft.update(lams=(0.1, 1), lrs=(0.3,))
  assert [(s.lam, s.lr) for s in settings_of(config)] == [(0.1, 0.3), (1.0, 0.3)]


def test_one_checkpoint_and_a_folder_per_setting(k_run):
  root, results = k_run
  assert sorted(p.name for p in root.iterdir()) == sorted(
      ["checkpoints", "config.json", "metrics.json", "metrics.jsonl", *NAMES])
  assert sorted(int(p.name) for p in (root / "checkpoints").iterdir()) == [4, 5]
  assert [json.loads(line)["batch"] for line in (root / "metrics.jsonl").open()] == [5]
  for name in NAMES:
    assert {p.name for p in (root / name).iterdir()} >= {
        "config.json", "metrics.json", "metrics.jsonl", "noise.npy", "report.md"}
  assert list(results["settings"]) == NAMES
  assert json.loads((root / "metrics.json").read_text()) == results
  record = json.loads((root / "metrics.jsonl").read_text().splitlines()[-1])
  assert {"loss_k2", "val_accuracy_k0", "val_accuracy_k2"} <= set(record)
  noises = [np.load(root / name / "noise.npy") for name in NAMES]
  assert record["loss_k2"] != record["loss_k0"]
  assert all(not np.allclose(a, b) for i, a in enumerate(noises) for b in noises[i + 1:])


def test_each_setting_equals_its_separate_run(data_dir, classifier_dir, k_run, tmp_path):
  """Noise (atol 1e-5), training log and final accuracies of every setting, though the
  K run was interrupted and resumed."""
  root, _ = k_run
  config = _k_config(data_dir, classifier_dir)
  apply_fn, params, sources = _frozen(config)
  eval_step = make_eval_step(apply_fn)
  for setting in settings_of(config):
    alone = tmp_path / setting.name
    alone.mkdir()
    noise = phases.fit_noise(setting.config, setting.config.dft, apply_fn, params, sources, alone)
    np.testing.assert_allclose(np.load(root / setting.name / "noise.npy"), noise, atol=1e-5)
    together, separate = _log(root / setting.name / "metrics.jsonl"), _log(alone / "metrics.jsonl")
    assert [list(r) for r in together] == [list(r) for r in separate]
    for a, b in zip(together, separate):
      np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-4, atol=1e-6)
    results = json.loads((root / setting.name / "metrics.json").read_text())
    for split, written in (("test", results["after"]), ("validation", results["val"]["after"])):
      expected = evaluate_split(eval_step, params, noise, sources[split], config)
      assert written["accuracy"] == expected["accuracy"]
      assert written["psnr_db"] == pytest.approx(expected["psnr_db"], rel=1e-4)


def test_collect_reads_the_settings_as_separate_runs(k_run):
  root, results = k_run
  groups = find_runs(root)
  assert sorted(groups) == NAMES
  for name, runs in groups.items():
    assert len(runs) == 1 and runs[0]["method"] == "dft"
    assert runs[0]["after"]["accuracy"] == results["settings"][name]["test_accuracy"]


def test_a_tuple_overrides_the_field_from_the_command_line():
  argv = ["dft", f"--config={REPO / 'configs' / 'digits.py'}:mnist5k_to_uci",
          "--config.dft.lams=(0.01,0.03,0.1)", "--config.dft.lrs=0.3"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  assert config.dft.lams == (0.01, 0.03, 0.1) and config.dft.lrs == (0.3,)
  assert [s.name for s in settings_of(config)] == [
      "dft.lam=0.01,dft.lr=0.3", "dft.lam=0.03,dft.lr=0.3", "dft.lam=0.1,dft.lr=0.3"]


@pytest.mark.parametrize("field, value, message", [
    ("lams", ("a",), r"lams=\('a',\) must be a tuple of finite numbers"),
    ("lams", (0.1, float("nan")), "must be a tuple of finite numbers"),
    ("lams", (0.1, -0.1), "every lam must be >= 0"),
    ("lrs", (0.1, 0.0), "every lr must be > 0"),
    ("lrs", (0.1, 0.1), r"repeats a value; list each lr once"),
])
def test_bad_settings_are_refused(field, value, message):
  config = _dft_config("data", "runs/classifier", **{field: value})
  with pytest.raises(ValueError, match=message):
    check_schedule(config, "dft")


def test_settings_are_refused_where_one_noise_is_trained():
  config = _dft_config("data", "runs/classifier", lrs=(0.1, 0.3))
  with pytest.raises(ValueError, match="DFT\\+MFT runs one: set config.dft.lam"):
    check_schedule(_with_mft(config), "dft_mft")
  with config.unlocked():
    config.black_box = {"kind": "jax"}
  with pytest.raises(ValueError, match="query-only DFT runs one"):
    check_schedule(config, "dft")


def _with_mft(config):
  from configs.paper import intra  # pylint: disable=import-outside-toplevel
  full = intra.get_config("uci_digits,runlocal")
  with full.unlocked():
    full.dft = config.dft
  return full
