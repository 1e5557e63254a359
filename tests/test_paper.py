"""The paper's experiments on tiny configs: MFT, DFT+MFT, compare, reports, sweeps."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.paper import experiment, inter, intra
from dfm import loop, metrics, models
from dfm.classifier import init_train_state, make_train_step, restrict_to_layers
from experiments import collect, compare, dft_mft, sweep

SEEDS = 2


def _config(data_dir, arg="uci_digits,runlocal"):
  config = intra.get_config(arg)
  with config.unlocked():
    config.data_dir = data_dir
  return config


@pytest.fixture(scope="module")
def compared(data_dir, tmp_path_factory):
  """One compare of every method over two seeds, on UCI digits with a tiny VGG."""
  root = tmp_path_factory.mktemp("compare")
  return root, compare.run(_config(data_dir), str(root), seeds=SEEDS)


def test_compare_writes_the_table_and_the_claims(compared):
  root, comparison = compared
  assert set(comparison["test_accuracy"]) == {"before", "dft", "mft", "dft_mft"}
  assert all(len(values) == SEEDS for values in comparison["test_accuracy"].values())
  assert set(comparison["psnr_db"]) == {"dft", "dft_mft"}
  assert [claim.split(":")[0] for claim in comparison["claims"]] == [
      "DFT beats MFT", "DFT+MFT beats both"]
  table = (root / "compare.md").read_text()
  assert "| DFT+MFT |" in table and " +- " in table
  assert json.loads((root / "compare.json").read_text()) == json.loads(json.dumps(comparison))
  assert len((root / "compare.csv").read_text().splitlines()) == 1 + 4 * SEEDS


def test_every_run_writes_a_report_with_its_figures(compared):
  root, _ = compared
  for method in ("dft", "mft", "dft_mft"):
    run_dir = root / method / "seed0"
    report = (run_dir / "report.md").read_text()
    for figure in ("roc.png", "scores.png"):
      assert (run_dir / figure).stat().st_size > 1000, (method, figure)
      assert f"({figure})" in report
    assert "Confusion matrix, before" in report and "| class | AUC before | AUC after |" in report
    assert ("SSIM" in report) == (method != "mft")
    assert ("noise.png" in report) == (method != "mft")
  saved = json.loads((root / "dft" / "seed0" / "metrics.json").read_text())
  assert 0 < saved["after"]["ssim"] <= 1 and saved["method"] == "dft"


def test_compare_again_skips_finished_runs(compared, capsys):
  root, comparison = compared
  config = _config(json.loads((root / "config.json").read_text())["data_dir"])
  again = compare.run(config, str(root), seeds=SEEDS)
  assert again == comparison
  assert capsys.readouterr().out.count("Finished already") == 4 * SEEDS


class _Interrupted(Exception):
  pass


def test_dft_mft_resumes_in_the_middle_of_a_round(compared, data_dir, tmp_path, monkeypatch):
  root, _ = compared
  config = compare.seeded(_config(data_dir), 0, root / "classifier" / "seed0")
  run_loop, calls = loop.run_loop, [0]

  def interrupted_in_round_two(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:  # Round 2's DFT: rounds 1's phases are done and checkpointed.
      raise _Interrupted
    return run_loop(*args, **kwargs)

  monkeypatch.setattr(loop, "run_loop", interrupted_in_round_two)
  with pytest.raises(_Interrupted):
    dft_mft.run(config, str(tmp_path))
  monkeypatch.setattr(loop, "run_loop", run_loop)
  dft_mft.run(config, str(tmp_path))
  np.testing.assert_array_equal(np.load(tmp_path / "noise.npy"),
                                np.load(root / "dft_mft" / "seed0" / "noise.npy"))
  assert sorted(p.name for p in tmp_path.glob("round*/*")) == ["dft", "dft", "mft", "mft"]


def _tiny_classifier():
  config = intra.get_config("uci_digits,runlocal")
  module = models.build_classifier(config.model)
  params = models.init_params(module, tuple(config.model.input_shape), seed=0)
  batch = {"image": jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)),
           "label": jnp.arange(8) % 10, "mask": jnp.ones(8)}
  return models.make_apply_fn(module), params, batch


@pytest.mark.parametrize("layers", ["all", "head"])
def test_mft_moves_only_the_chosen_layers(layers):
  apply_fn, params, batch = _tiny_classifier()
  optimizer = restrict_to_layers(optax.adam(1e-2), params, layers)
  state, _ = make_train_step(apply_fn, optimizer)(init_train_state(params, optimizer), batch)
  moved = {name: not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(params[name]), jax.tree.leaves(state["params"][name]))) for name in params}
  assert all(moved[name] for name in params if name.startswith("Dense"))
  assert any(moved[name] for name in params if not name.startswith("Dense")) == (layers == "all")


def test_mft_with_a_noise_fits_the_perturbed_images():
  apply_fn, params, batch = _tiny_classifier()
  optimizer = optax.sgd(0.1)
  step = make_train_step(apply_fn, optimizer)
  plain, _ = step(init_train_state(params, optimizer), batch)
  noise = jnp.full((28, 28, 1), 0.5)
  perturbed, _ = step(init_train_state(params, optimizer), batch, noise)
  assert not np.allclose(plain["params"]["Dense_0"]["kernel"], perturbed["params"]["Dense_0"]["kernel"])


def test_unknown_mft_layers_are_refused():
  with pytest.raises(ValueError, match="all.*head"):
    restrict_to_layers(optax.adam(1e-3), {}, "convs")


def test_roc_auc_and_rates():
  fpr, tpr = metrics.roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
  assert metrics.area_under_curve(fpr, tpr) == pytest.approx(0.75)
  assert metrics.rates(np.array([[3, 1], [2, 6]])) == {"tpr": 0.75, "tnr": 0.75}


def test_sweep_prints_one_command_per_point_and_seed(tmp_path, capsys):
  listed = sweep.sweep(inter.get_config("mnist5k-uci_digits"), str(tmp_path),
                       ["dft.lam=0.01,0.1", "dft.lr=1e-3"], seeds=2, experiment="dft",
                       print_commands=True, config_arg="configs/paper/inter.py:mnist5k-uci_digits",
                       overrides={"classifier_dir": "runs/m"})
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == len(listed) == 4
  assert lines[1].startswith("python -m experiments.dft --config=configs/paper/inter.py:")
  assert "--config.classifier_dir=runs/m --config.dft.lam=0.01 --config.dft.lr=1e-3 " \
         "--config.seed=1" in lines[1]
  assert not any(tmp_path.iterdir())


def test_grid_values_keep_the_commas_of_tuples():
  assert sweep.parse_grid(["dft.noise_shape=(14,14,1), (7,7,1)", "dft.lam=0.1,1"]) == [
      ("dft.noise_shape", ["(14,14,1)", "(7,7,1)"]), ("dft.lam", ["0.1", "1"])]
  config = sweep.configured(inter.get_config("mnist5k-uci_digits"),
                            {"dft.noise_shape": "(7,7,1)", "dft.lam": "1"}, seed=4)
  assert tuple(config.dft.noise_shape) == (7, 7, 1) and config.dft.lam == 1.0 and config.seed == 4


def test_sweep_rejects_unknown_keys_and_bad_values(tmp_path):
  config = inter.get_config("mnist5k-uci_digits")
  with pytest.raises(ValueError, match="not in the config.*'lam'"):
    sweep.sweep(config, str(tmp_path), ["dft.lamda=1"], seeds=1, experiment="dft")
  with pytest.raises(ValueError, match="expected a float"):
    sweep.sweep(config, str(tmp_path), ["dft.lam=big"], seeds=1, experiment="dft")
  with pytest.raises(ValueError, match="KEY=V1,V2"):
    sweep.sweep(config, str(tmp_path), ["dft.lam"], seeds=1, experiment="dft")
  with pytest.raises(ValueError, match="config.mft.layers='heads' is not one of"):
    sweep.sweep(config, str(tmp_path), ["mft.layers=all,heads"], seeds=1, experiment="mft")
  assert not any(tmp_path.iterdir())


def test_sweep_runs_points_skips_finished_ones_and_collect_selects_on_val(
    compared, data_dir, tmp_path, capsys):
  root, _ = compared
  config = _config(data_dir)
  with config.unlocked():
    config.classifier_dir = str(root / "classifier" / "seed0")
  grid = ["mft.lr=1e-4,1e-2"]
  sweep.sweep(config, str(tmp_path), grid, seeds=1, experiment="mft")
  sweep.sweep(config, str(tmp_path), grid, seeds=1, experiment="mft")
  assert capsys.readouterr().out.count("Finished already") == 2
  text = collect.collect(str(tmp_path))
  val = {lr: json.loads((tmp_path / f"mft.lr={lr}" / "seed0" / "metrics.json").read_text())
         ["val"]["after"]["accuracy"] for lr in ("1e-4", "1e-2")}
  best = max(val, key=val.get)
  selected = [line for line in text.splitlines() if line.endswith("| yes |")]
  assert len(selected) == 1 and selected[0].startswith(f"| mft.lr={best} |")
  assert (tmp_path / "collect.csv").is_file()


def test_collect_groups_seeds_of_a_compare(compared):
  root, _ = compared
  rows = [line for line in collect.collect(str(root)).splitlines() if line.startswith("| d")
          or line.startswith("| m")]
  assert sorted(row.split(" | ")[0] for row in rows) == ["| dft", "| dft_mft", "| mft"]
  assert all(f" | {SEEDS} | " in row for row in rows)


def test_compare_checks_its_inputs_before_writing(data_dir, tmp_path):
  config = _config(str(tmp_path / "no_data"))
  with pytest.raises(FileNotFoundError, match="prepare"):
    compare.run(config, str(tmp_path / "compare"), seeds=1)
  config = _config(data_dir)
  with config.unlocked():
    config.dft_mft.rounds = 0
  with pytest.raises(ValueError, match="config.dft_mft.rounds must be a positive integer"):
    compare.run(config, str(tmp_path / "compare"), seeds=1)
  assert not (tmp_path / "compare").exists()


def test_collect_explains_an_empty_folder(tmp_path):
  with pytest.raises(ValueError, match="No finished"):
    collect.collect(str(tmp_path))


@pytest.mark.parametrize("arg", [
    "mnist5k-uci_digits", "uci_digits-mnist5k",
    *(f"{a}-{b}:gender" for a in ("muct", "lfw", "celeba") for b in ("muct", "lfw", "celeba") if a != b),
    *(f"celeba-lfw:{a}" for a in ("smiling", "bushy_eyebrows", "pale_skin")),
    *(f"lfw-celeba:{a}" for a in ("smiling", "wearing_lipstick")),
])
def test_inter_configs_cover_tables_5_and_6(arg):
  config = inter.get_config(arg)
  source, target = arg.split(":")[0].split("-")
  assert config.train.dataset.startswith(source) and config.dft.dataset.startswith(target)
  assert config.mft.dataset == config.dft.dataset
  assert config.mft.epochs == 20  # The paper's MFT; the digits' lr was chosen on val.
  assert config.mft.lr == experiment.DIGITS_MFT_LR.get(target, 0.005)


@pytest.mark.parametrize("arg", ["mnist5k", "uci_digits", "lfw_subset:gender", "muct",
                                 *(f"lfw:{a}" for a in ("gender", "smiling", "bushy_eyebrows", "pale_skin")),
                                 *(f"celeba:{a}" for a in ("gender", "smiling", "attractive",
                                                           "wearing_lipstick"))])
def test_intra_configs_cover_tables_2_and_3(arg):
  config = intra.get_config(arg)
  assert config.train.dataset == config.dft.dataset == config.mft.dataset


@pytest.mark.parametrize("arg, problem", [
    ("lfw_subset-celeba:gender", "one classifier cannot serve both"),
    ("mnist5k-svhn", "Unknown dataset 'svhn'"),
    ("mnist5k-uci_digits:smiling", "one label"),
    ("celeba", "SOURCE-TARGET"),
    ("mnist5k-uci_digits,runlocl", "Unexpected config argument"),
    ("celeba-lfw:runlocal", "write ',runlocal'"),
    ("muct-lfw:smiling", "one attribute, gender"),
    ("lfw-celeba:attractive", "Unknown config '64px_attractive_random' of dataset 'lfw'"),
])
def test_bad_experiment_names_are_explained(arg, problem):
  with pytest.raises(ValueError, match=problem):
    inter.get_config(arg)
