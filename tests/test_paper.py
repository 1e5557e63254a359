"""The paper's experiments on tiny configs: MFT, DFT+MFT, compare, reports, sweeps."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.paper import inter, intra
from dfm import models
from dfm.run import loop
from dfm.report import metrics
from dfm.models.training import init_train_state, make_train_step, restrict_to_layers
from dfm.run import methods
from dfm.studies import compare, sweep
from dfm.studies import collect

SEEDS = 1  # Runs are the slow part; mean +- std over seeds is tested on made-up results.


def _config(data_dir, arg="uci_digits,runlocal", figures=False):
  """The tiny config ``arg``; the report's figures only when asked (the compare's)."""
  config = intra.get_config(arg)
  with config.unlocked():
    config.data_dir = data_dir
    config.figures = figures
    # Checkpoints and validation every 8 updates, not 2 (a compare takes ~4 s less): still
    # in the middle of each phase (DFT's 5 batches of 2 updates, MFT's 9 batches).
    config.checkpoint_every = config.log_every = 8
  return config


@pytest.fixture(scope="module")
def compared(data_dir, tmp_path_factory):
  """One compare of every method on one seed, on UCI digits with a tiny VGG."""
  root = tmp_path_factory.mktemp("compare")
  return root, compare.run(_config(data_dir, figures=True), str(root), seeds=SEEDS)


def test_compare_writes_the_table_and_the_claims(compared):
  root, comparison = compared
  assert set(comparison["test_accuracy"]) == {"before", "dft", "mft", "dft_mft"}
  assert all(len(values) == SEEDS for values in comparison["test_accuracy"].values())
  assert set(comparison["psnr_db"]) == {"dft", "dft_mft"}
  assert [claim.split(":")[0] for claim in comparison["claims"]] == [
      "DFT beats MFT", "DFT+MFT beats both"]
  assert comparison["seeds"] == [0] and comparison["dataset"] == "uci_digits"
  table = (root / "compare.md").read_text()
  dft_mft_row = next(line for line in table.splitlines() if line.startswith("| DFT+MFT |"))
  # One seed: each cell is that seed's value alone.
  assert dft_mft_row.startswith(f"| DFT+MFT | {100 * comparison['test_accuracy']['dft_mft'][0]:.1f} | ")
  assert not any(" +- " in line for line in table.splitlines() if line.startswith("| "))
  assert json.loads((root / "compare.json").read_text()) == json.loads(json.dumps(comparison))
  assert len((root / "compare.csv").read_text().splitlines()) == 1 + 4 * SEEDS


def _made_up_result(test: tuple[float, float], val: tuple[float, float],
                    psnr: float | None = None) -> dict:
  """What one method's run returns, with (before, after) accuracies on test and val."""
  after = {"accuracy": test[1]}
  if psnr is not None:
    after.update(psnr_db=psnr, ssim=psnr / 100)
  return {"dataset": "digits", "before": {"accuracy": test[0]}, "after": after,
          "val": {"before": {"accuracy": val[0]}, "after": {"accuracy": val[1]}}}


def test_summarize_gives_mean_std_over_seeds_and_checks_the_claims():
  results = {
      "dft": [_made_up_result((0.5, 0.8), (0.4, 0.7), psnr=30.0),
              _made_up_result((0.6, 0.9), (0.5, 0.8), psnr=32.0)],
      "mft": [_made_up_result((0.5, 0.7), (0.4, 0.6)), _made_up_result((0.6, 0.75), (0.5, 0.6))],
      "dft_mft": [_made_up_result((0.5, 0.95), (0.4, 0.9), psnr=28.0),
                  _made_up_result((0.6, 0.85), (0.5, 0.8), psnr=26.0)],
  }
  comparison = compare.summarize(results, [3, 4])
  assert comparison["seeds"] == [3, 4] and comparison["dataset"] == "digits"
  assert comparison["test_accuracy"] == {"before": [0.5, 0.6], "dft": [0.8, 0.9],
                                         "mft": [0.7, 0.75], "dft_mft": [0.95, 0.85]}
  assert comparison["val_accuracy"]["before"] == [0.4, 0.5]
  assert comparison["psnr_db"] == {"dft": [30.0, 32.0], "dft_mft": [28.0, 26.0]}
  assert comparison["claims"] == [
      "DFT beats MFT: held (mean test 85.0% vs 72.5%; DFT ahead in 2 of 2 seeds).",
      "DFT+MFT beats both: held (mean test 90.0% vs best single 85.0%; ahead of both in 1 of "
      "2 seeds)."]
  rows = compare.markdown(comparison).splitlines()
  assert rows[0] == "digits, mean +- std over seeds [3, 4]"
  # Sample standard deviations: [0.5, 0.6] -> 7.1, [28, 26] dB -> 1.4, SSIM [.28, .26] -> .014.
  assert "| before (frozen classifier) | 55.0 +- 7.1 | 45.0 +- 7.1 | - | - |" in rows
  assert "| MFT | 72.5 +- 3.5 | 60.0 +- 0.0 | - | - |" in rows
  assert "| DFT+MFT | 90.0 +- 7.1 | 85.0 +- 7.1 | 27.0 +- 1.4 | 0.270 +- 0.014 |" in rows
  assert rows[-2:] == [f"- {claim}" for claim in comparison["claims"]]


def test_claims_that_did_not_hold_say_so():
  results = {"dft": [_made_up_result((0.5, 0.6), (0.5, 0.6), psnr=30.0)],
             "mft": [_made_up_result((0.5, 0.7), (0.5, 0.7))],
             "dft_mft": [_made_up_result((0.5, 0.65), (0.5, 0.7), psnr=30.0)]}
  assert compare.summarize(results, [0])["claims"] == [
      "DFT beats MFT: did not hold (mean test 60.0% vs 70.0%; DFT ahead in 0 of 1 seeds).",
      "DFT+MFT beats both: did not hold (mean test 65.0% vs best single 70.0%; ahead of both "
      "in 0 of 1 seeds)."]
  assert compare.summarize({"dft": results["dft"]}, [0])["claims"] == []


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


def test_compares_that_differ_in_dft_only_share_one_classifier(data_dir, tmp_path, capsys):
  shared = tmp_path / "classifiers"
  for lam in (0.01, 0.1):
    config = _config(data_dir)
    with config.unlocked():
      config.dft.lam = lam
    compare.run(config, str(tmp_path / f"lam{lam}"), seeds=1, methods=["dft"],
                shared_classifiers=shared)
  assert capsys.readouterr().out.count("Finished already") == 1  # The second lam's classifier.
  [classifier] = [path.parent for path in shared.glob("*/seed0/metrics.json")]
  assert "dft" not in json.loads((classifier / "config.json").read_text())
  for lam in (0.01, 0.1):
    run = json.loads((tmp_path / f"lam{lam}" / "dft" / "seed0" / "config.json").read_text())
    assert run["classifier_dir"] == str(classifier) and run["dft"]["lam"] == lam
    assert not (tmp_path / f"lam{lam}" / "classifier").exists()


def test_compare_refuses_k_settings_before_anything_runs(data_dir, tmp_path):
  config = _config(data_dir)
  with config.unlocked():
    config.dft.lams = (0.01, 0.1)
  with pytest.raises(ValueError, match="compare's table of one run per method cannot hold"):
    compare.run(config, str(tmp_path / "compare"), seeds=1, methods=["dft"])
  assert not (tmp_path / "compare").exists()


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
    methods.dft_mft(config, str(tmp_path))
  monkeypatch.setattr(loop, "run_loop", run_loop)
  methods.dft_mft(config, str(tmp_path))
  np.testing.assert_array_equal(np.load(tmp_path / "noise.npy"),
                                np.load(root / "dft_mft" / "seed0" / "noise.npy"))
  assert sorted(p.name for p in tmp_path.glob("round*/*")) == ["dft", "dft", "mft", "mft"]


@pytest.fixture(scope="module")
def tiny_classifier():
  """The runlocal digits VGG at its initial weights, and a batch of 8 random images."""
  config = intra.get_config("uci_digits,runlocal")
  module = models.build_classifier(config.model)
  params = models.init_params(module, tuple(config.model.input_shape), seed=0)
  batch = {"image": jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)),
           "label": jnp.arange(8) % 10, "mask": jnp.ones(8)}
  return models.make_apply_fn(module), params, batch


@pytest.mark.parametrize("layers", ["all", "head"])
def test_mft_moves_only_the_chosen_layers(tiny_classifier, layers):
  apply_fn, params, batch = tiny_classifier
  optimizer = restrict_to_layers(optax.adam(1e-2), params, layers)
  # Jitted as the runs do (an eager step compiles each of its hundreds of ops instead).
  step = jax.jit(make_train_step(apply_fn, optimizer))
  state, _ = step(init_train_state(params, optimizer), batch)
  moved = {name: not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(params[name]), jax.tree.leaves(state["params"][name]))) for name in params}
  assert all(moved[name] for name in params if name.startswith("Dense"))
  assert any(moved[name] for name in params if not name.startswith("Dense")) == (layers == "all")


def test_mft_with_a_noise_fits_the_perturbed_images(tiny_classifier):
  apply_fn, params, batch = tiny_classifier
  optimizer = optax.sgd(0.1)
  step = jax.jit(make_train_step(apply_fn, optimizer))
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


def test_collect_groups_seeds_of_a_compare(compared, tmp_path):
  """The compare's runs, each copied as two seeds with made-up accuracies."""
  root, _ = compared
  base = {"dft": 0.5, "mft": 0.3, "dft_mft": 0.6}
  for method in ("classifier", *base):
    for seed in (0, 1):
      run_dir = tmp_path / method / f"seed{seed}"
      run_dir.mkdir(parents=True)
      shutil.copy(root / method / "seed0" / "config.json", run_dir)
      results = json.loads((root / method / "seed0" / "metrics.json").read_text())
      if method in base:
        results["val"]["after"]["accuracy"] = base[method] + 0.2 * seed
        results["after"]["accuracy"] = base[method] - 0.1 + 0.2 * seed
      (run_dir / "metrics.json").write_text(json.dumps(results))
  lines = collect.collect(str(tmp_path)).splitlines()
  rows = {line.split(" | ")[0][2:]: line for line in lines
          if line.startswith("| ") and not line.startswith("| run |")}
  assert sorted(rows) == ["dft", "dft_mft", "mft"]  # Not the classifier.
  # Mean of b and b + 0.2; sample standard deviation 0.2 / sqrt(2) = 14.1%.
  assert "| dft | dft | uci_digits | uci_digits | 2 | 60.0 +- 14.1 | 50.0 +- 14.1 | " in rows["dft"]
  assert "| mft | mft | uci_digits | uci_digits | 2 | 40.0 +- 14.1 | 30.0 +- 14.1 | " in rows["mft"]
  assert "| 2 | 70.0 +- 14.1 | 60.0 +- 14.1 | " in rows["dft_mft"]
  assert all(row.endswith("| yes |") for row in rows.values())  # One row per method.


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
  assert config.mft.epochs == 20  # The paper's MFT.
  # The paper's lr for faces; for the digits the lr chosen on the target's val (README, "MFT").
  assert config.mft.lr == {"uci_digits": 1e-4, "mnist5k": 1e-3}.get(target, 0.005)


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
