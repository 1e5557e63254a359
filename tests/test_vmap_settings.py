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
from dfm.run import loop, methods, phases
from dfm.run.checks import check_schedule
from dfm.run.settings import settings_of
from dfm.studies.collect import find_runs
from tests.test_experiments import (REPO, _dft_config, _interrupt_after, _Interrupted,  # noqa: F401
                                    classifier_dir)

# K = 3 learning rates in the run; lam varies too in the step's own test.
LAMS, LRS = (0.01,), (0.1, 0.3, 1.0)
NAMES = ["dft.lam=0.01,dft.lr=0.1", "dft.lam=0.01,dft.lr=0.3", "dft.lam=0.01,dft.lr=1.0"]


def _k_config(data_dir, classifier_dir):
  config = _dft_config(data_dir, classifier_dir, lams=LAMS, lrs=LRS)
  with config.unlocked():
    config.log_every = 4  # Validation after batches 2, 4 and 5 (the last).
  return config


@pytest.fixture(scope="module")
def k_run(data_dir, classifier_dir, tmp_path_factory):
  """``(workdir, results)`` of one finished run of the 3 settings."""
  workdir = tmp_path_factory.mktemp("k_run")
  return workdir, methods.dft(_k_config(data_dir, classifier_dir), str(workdir))


def test_the_stacked_step_equals_k_separate_steps():
  """Three (lam, lr) settings, cosine Adam, three steps on a tiny VGG: the vmapped
  step's noises and metrics equal each setting's own step."""
  shape, settings = (12, 12, 1), [(0.01, 0.1), (0.1, 0.3), (1.0, 0.03)]
  module = models.VGG(blocks=((4,), (8,)), dense=(16,), num_classes=3)
  apply_fn, params = models.make_apply_fn(module), models.init_params(module, shape, seed=0)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(size=(16, *shape)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 3, 16), jnp.int32)}
  optimizer_of = lambda lr: make_optimizer("adam", lr, schedule="cosine", total_steps=3)
  lams, lrs = (jnp.asarray(v) for v in zip(*settings))
  step = jax.jit(make_stacked_update_step(apply_fn, optimizer_of, lams=lams, lrs=lrs))
  state = init_stacked_state(jnp.zeros(shape), optimizer_of, lrs)
  for _ in range(3):
    state, metrics = step(state, params, batch)
  for k, (lam, lr) in enumerate(settings):
    alone = jax.jit(make_update_step(apply_fn, optimizer_of(lr), lam=lam))
    single = init_state(jnp.zeros(shape), optimizer_of(lr))
    for _ in range(3):
      single, single_metrics = alone(single, params, batch)
    np.testing.assert_allclose(state["noise"][k], single["noise"], atol=1e-5)
    for name, value in single_metrics.items():
      np.testing.assert_allclose(metrics[name][k], value, rtol=1e-4, atol=1e-6)
  assert int(state["step"][0]) == 3
  with pytest.raises(ValueError, match="one lam and one lr per setting"):
    make_stacked_update_step(apply_fn, optimizer_of, lams=lams, lrs=lrs[:2])


def _frozen(config):
  apply_fn, params = models.load_frozen_classifier(config)
  return apply_fn, params, data.open_splits(config.dft.dataset, config.data_dir,
                                            config.model.input_shape)


def _log(path: Path) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if k != "eta_s"}
          for line in path.read_text().splitlines()]


def test_settings_are_named_and_configured_as_separate_runs(data_dir, classifier_dir):
  config = _k_config(data_dir, classifier_dir)
  settings = settings_of(config)
  assert [s.name for s in settings] == NAMES
  single = _dft_config(data_dir, classifier_dir, lam=0.01, lr=0.3)
  with single.unlocked():
    single.log_every = 4
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
  for name in NAMES:
    assert sorted(p.name for p in (root / name).iterdir()) >= [
        "config.json", "metrics.json", "metrics.jsonl", "noise.npy", "noise.png", "report.md"]
  assert list(results["settings"]) == NAMES
  assert json.loads((root / "metrics.json").read_text()) == results
  record = json.loads((root / "metrics.jsonl").read_text().splitlines()[-1])
  assert {"loss_k2", "val_accuracy_k0", "val_accuracy_k2"} <= set(record)
  noises = [np.load(root / name / "noise.npy") for name in NAMES]
  assert record["loss_k2"] != record["loss_k0"]
  assert all(not np.allclose(a, b) for i, a in enumerate(noises) for b in noises[i + 1:])


def test_each_setting_equals_its_separate_run(data_dir, classifier_dir, k_run, tmp_path):
  """Noise (atol 1e-5) and training log of every setting; metrics.json of the last."""
  root, _ = k_run
  config = _k_config(data_dir, classifier_dir)
  apply_fn, params, sources = _frozen(config)
  *fitted, last = settings_of(config)
  for setting in fitted:
    (tmp_path / setting.name).mkdir()
    np.save(tmp_path / setting.name / "noise.npy", phases.fit_noise(
        setting.config, setting.config.dft, apply_fn, params, sources, tmp_path / setting.name))
  separate = methods.dft(last.config, str(tmp_path / last.name))
  for name in NAMES:
    np.testing.assert_allclose(np.load(root / name / "noise.npy"),
                               np.load(tmp_path / name / "noise.npy"), atol=1e-5)
    together, alone = _log(root / name / "metrics.jsonl"), _log(tmp_path / name / "metrics.jsonl")
    assert [list(r) for r in together] == [list(r) for r in alone]
    for a, b in zip(together, alone):
      np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-4, atol=1e-6)
  _assert_close(json.loads((root / last.name / "metrics.json").read_text()), separate)


def _assert_close(a, b) -> None:
  """Nested results equal: strings exactly, numbers to rtol 1e-4."""
  if isinstance(a, dict):
    assert a.keys() == b.keys()
    for key in a:
      _assert_close(a[key], b[key])
  elif isinstance(a, str):
    assert a == b
  else:
    np.testing.assert_allclose(a, b, rtol=1e-4)


def test_interrupted_k_run_resumes_to_the_same_noises(data_dir, classifier_dir, k_run, tmp_path,
                                                      monkeypatch):
  root, _ = k_run
  config = _k_config(data_dir, classifier_dir)
  apply_fn, params, sources = _frozen(config)
  settings = [(s.lam, s.lr) for s in settings_of(config)]
  with monkeypatch.context() as patch:
    patch.setattr(loop, "run_loop", _interrupt_after(3, loop.run_loop))
    with pytest.raises(_Interrupted):
      phases.fit_noises(config, settings, apply_fn, params, sources, tmp_path)
  noises, records = phases.fit_noises(config, settings, apply_fn, params, sources, tmp_path)
  for k, name in enumerate(NAMES):
    np.testing.assert_array_equal(noises[k], np.load(root / name / "noise.npy"))
  assert [r["batch"] for r in records] == [2, 4, 5]


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
