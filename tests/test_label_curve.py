"""Few labels: the subsets, the linear probe, and the label-efficiency curve."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.paper import inter
from dfm import data, models
from dfm.models.training import init_train_state, make_train_step, restrict_to_layers
from dfm.run.workdir import claim_workdir
from dfm.studies import label_curve
from dfm.studies.sweep import run_here


def _labels(source) -> np.ndarray:
  return np.array([source[i]["label"] for i in range(len(source))])


def test_subsets_are_stratified_nested_seeded_and_apart_from_validation(data_dir):
  sources = data.open_splits("uci_digits", data_dir, (28, 28, 1))
  subsets = {k: data.few_labels(sources, examples_per_class=k, val_examples_per_class=k, seed=0)
             for k in (1, 2, 4)}
  for k, split in subsets.items():
    assert np.bincount(_labels(split["train"]), minlength=10).tolist() == [k] * 10
    assert np.bincount(_labels(split["validation"]), minlength=10).tolist() == [k] * 10
    assert split["test"] is sources["test"]  # Test stays whole: it is only reported.
  train_images = {k: {split["train"][i]["image"].tobytes() for i in range(10 * k)}
                  for k, split in subsets.items()}
  assert train_images[1] < train_images[2] < train_images[4]  # Nested.
  validation = {s["validation"][i]["image"].tobytes() for s in subsets.values()
                for i in range(len(s["validation"]))}
  assert not validation & train_images[4]
  again = data.few_labels(sources, examples_per_class=2, val_examples_per_class=2, seed=0)
  other = data.few_labels(sources, examples_per_class=2, val_examples_per_class=2, seed=1)
  indices = [data.subset_indices(_labels(sources["train"]), 2, seed=seed) for seed in (0, 0, 1)]
  assert np.array_equal(indices[0], indices[1]) and not np.array_equal(indices[0], indices[2])
  assert np.array_equal(again["train"].images, subsets[2]["train"].images)
  assert not np.array_equal(other["train"].images, subsets[2]["train"].images)
  whole = data.few_labels(sources, examples_per_class=0, val_examples_per_class=0, seed=0)
  assert whole["train"] is sources["train"] and whole["validation"] is sources["validation"]


def test_asking_more_labels_than_a_class_has_names_the_class():
  with pytest.raises(ValueError, match=r"fewer than 3 examples of class\(es\) \{1: 2\}.*at most 2"):
    data.subset_indices(np.array([0, 0, 0, 1, 1]), 3, seed=0)
  with pytest.raises(ValueError, match="must be positive"):
    data.subset_indices(np.array([0, 1]), -1, seed=0)


def test_the_output_layer_is_found_in_any_params_tree():
  config = inter.get_config("mnist5k-uci_digits,runlocal")
  module = models.build_classifier(config.model)
  params = models.init_params(module, (28, 28, 1), seed=0)
  last = f"Dense_{len(config.model.dense)}"
  assert models.output_layer(params, 10) == [f"['{last}']['bias']", f"['{last}']['kernel']"]
  onnx_like = {"trainable": {"layer_1_weights": np.ones((16, 2)), "layer_1_bias": np.ones(2),
                             "layer_4_weights": np.ones((4096, 16))}, "fixed": {}}
  assert models.output_layer(onnx_like, 2) == ["['layer_1_bias']", "['layer_1_weights']"]
  reset = models.reset_output_layer(onnx_like, 2)["trainable"]
  assert not reset["layer_1_weights"].any() and reset["layer_4_weights"].all()
  onnx_like["trainable"]["other"] = np.ones((2, 8))
  with pytest.raises(ValueError, match="the model has 2"):
    models.output_layer(onnx_like, 2)


def _toy_probe_problem():
  """Three well separated clusters of 6x6 images, a fixed random ReLU feature layer
  (``Dense_0``) and an output layer (``Dense_1``); train and held-out draws."""
  rng = np.random.default_rng(0)
  centres = rng.uniform(0.2, 0.8, (3, 36))

  def draw(n):
    labels = np.arange(n) % 3
    images = np.clip(centres[labels] + 0.08 * rng.normal(size=(n, 36)), 0, 1)
    return images.reshape(n, 6, 6, 1).astype(np.float32), labels

  params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(36, 24)) / 6, jnp.float32),
                        "bias": jnp.zeros(24)},
            "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(24, 3)), jnp.float32),
                        "bias": jnp.ones(3)}}

  def features(params, images):
    return jax.nn.relu(images.reshape(len(images), -1) @ params["Dense_0"]["kernel"]
                       + params["Dense_0"]["bias"])

  def apply_fn(params, images):
    return features(params, images) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]

  return draw(60), draw(300), params, features, apply_fn


def test_linear_probe_reaches_a_closed_form_least_squares_probe():
  (train_x, train_y), (test_x, test_y), params, features, apply_fn = _toy_probe_problem()
  phi = np.c_[features(params, train_x), np.ones(len(train_x))]
  weights = np.linalg.lstsq(phi, np.eye(3)[train_y], rcond=None)[0]
  test_phi = np.c_[features(params, test_x), np.ones(len(test_x))]
  least_squares = np.mean((test_phi @ weights).argmax(1) == test_y)
  assert least_squares > 0.9  # The toy set is separable in the features.
  optimizer = restrict_to_layers(optax.adam(0.05), params, "output", num_classes=3)
  initial = models.reset_output_layer(params, 3)
  step = jax.jit(make_train_step(apply_fn, optimizer))
  state = init_train_state(initial, optimizer)
  batch = {"image": train_x, "label": jnp.asarray(train_y), "mask": jnp.ones(len(train_y))}
  for _ in range(200):
    state, _ = step(state, batch)
  probe = np.mean(np.asarray(apply_fn(state["params"], test_x)).argmax(1) == test_y)
  assert probe >= least_squares
  assert np.array_equal(state["params"]["Dense_0"]["kernel"], params["Dense_0"]["kernel"])


def test_schedule_keeps_the_updates_of_the_whole_split():
  assert label_curve.schedule_for(800, 5, 1078, 20) == (24, 10)
  assert label_curve.schedule_for(128, 20, 1078, 320) == (128, 60)
  assert label_curve.parse_shots(["all", "2", "1"]) == [1, 2, 0]
  with pytest.raises(ValueError, match="neither a positive number"):
    label_curve.parse_shots(["0"])


def _summary(dft_tests: dict[str, list[float]], baseline: float) -> dict:
  def runs(values):
    return {seed: {"test": v, "val": v, "lr": 0.1} for seed, v in enumerate(values)}
  return {"before": {0: 0.5, 1: 0.5},
          "curve": {"dft": {k: runs(v) for k, v in dft_tests.items()},
                    "probe": {k: runs([baseline, baseline]) for k in dft_tests}}}


def test_crossover_is_the_largest_k_won_on_every_seed():
  lines, verdict = label_curve.crossover(_summary({"1": [0.9, 0.8], "2": [0.9, 0.6],
                                                   "all": [0.6, 0.6]}, 0.7))
  assert verdict == "DFT beats Linear probe on every seed at k = 1 (largest: 1)."
  assert "k=2: DFT beats Linear probe in 1 of 2 seeds." in lines
  _, never = label_curve.crossover(_summary({"1": [0.6, 0.8]}, 0.7))
  assert never == "DFT did not beat Linear probe on every seed at any k tried."


def _config(data_dir):
  config = inter.get_config("mnist5k-uci_digits,runlocal")
  with config.unlocked():
    config.data_dir, config.figures = data_dir, False
  return config


def test_the_curve_runs_every_method_resumes_and_writes_its_report(
    data_dir, classifier_dir, tmp_path, capsys):
  config = _config(data_dir)
  grids = {name: (key, values[:1]) for name, (key, values) in label_curve.LR_GRIDS.items()}

  def run(shots):
    runs = label_curve.plan(config, tmp_path, shots=shots, seeds=[0], methods=["dft", "probe"],
                            lr_grids=grids, classifier_dirs={0: classifier_dir},
                            full_validation=False)
    for name, method_runs in runs.items():
      run_here(method_runs, tmp_path / name, experiment=label_curve.METHODS[name][0], seeds=1)
    return runs

  run([1])
  capsys.readouterr()
  runs = run([1, 2])
  printed = capsys.readouterr().out
  assert printed.count("Finished already") == 2  # k = 1 of both methods, read back.
  summary = label_curve.summarize(runs)
  assert not summary["missing"]
  assert set(summary["curve"]) == {"dft", "probe"} and list(summary["curve"]["dft"]) == ["1", "2"]
  text = label_curve.write_report(tmp_path, summary, title="toy", all_labels=108)
  assert "| Linear probe |" in text and ("beats" in text or "never" in text)
  for suffix in ("md", "csv", "json", "png"):
    assert (tmp_path / f"label_curve.{suffix}").is_file()
  with pytest.raises(ValueError, match="smallest class"):
    label_curve.plan(config, tmp_path, shots=[500], seeds=[0], methods=["dft"],
                     lr_grids=grids, classifier_dirs={0: classifier_dir}, full_validation=True)


def test_the_curve_checks_its_config_before_anything_trains(data_dir):
  config = _config(data_dir)
  with pytest.raises(ValueError, match="unknown"):
    label_curve.check(config, shots=[1], methods=["dft", "lora"], full_validation=False)
  with config.unlocked():
    del config["probe"]
  with pytest.raises(ValueError, match="no 'probe' section"):
    label_curve.check(config, shots=[1], methods=["probe"], full_validation=False)
  with config.unlocked():
    config.mft.examples_per_class = 4
  with pytest.raises(ValueError, match="same labelled images"):
    label_curve.check(config, shots=[1], methods=["dft_mft"], full_validation=False)
  with config.unlocked():
    config.model.kind = "onnx"
  with pytest.raises(ValueError, match="leave it out of --methods"):
    label_curve.check(config, shots=[1], methods=["mft_head"], full_validation=False)


def test_runs_made_before_the_few_label_fields_and_the_probe_still_resume(data_dir, tmp_path):
  config = _config(data_dir)
  old = config.to_dict()
  del old["probe"]
  for section in ("dft", "mft"):
    del old[section]["examples_per_class"], old[section]["val_examples_per_class"]
  (tmp_path / "config.json").write_text(json.dumps(old, default=list))
  assert claim_workdir(str(tmp_path), config) == tmp_path
  with config.unlocked():
    config.dft.examples_per_class = 2
  with pytest.raises(ValueError, match="differs in: dft.examples_per_class"):
    claim_workdir(str(tmp_path), config)
