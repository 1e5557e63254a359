"""Query-only DFT: the step, the functional ledger, the budget, selection, the method."""
import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import query as query_configs
from dfm import black_box, data, estimators, models
from dfm.black_box import (BlackBox, JaxBlackBox, Reply, Spent, TopKBlackBox, resolve_model_path,
                           with_spent)
from dfm.black_box.local_server import make_server
from dfm.query import (STRATEGIES, Candidate, EstimateOptions, SelectionRule, StudentOptions,
                       check_query, init_query_state, keep_best, make_cosine_step,
                       make_distill_step, make_evolution_step, make_query_step,
                       make_true_gradient, mcnemar_p_value)
from dfm.query.distill import add_to_replay, init_replay
from dfm.dft import init_state, make_update_step
from dfm.run import loop
from dfm.run.phases import FAILED_LEDGER, fit_noise_by_queries
from dfm.run.query_dft import query_dft


def _digits_config(data_dir, **overrides):
  config = query_configs.get_config("digits,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.figures = False  # Drawn in the gender-v1 run's test.
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
  return data.open_splits("uci_digits", data_dir, (28, 28, 1))


def _images(count, shape=(28, 28, 1), seed=0, validation_size=0):
  return np.random.default_rng(seed).uniform(size=(count, *shape)).astype(np.float32)


# What a test of the step does not test is the same for all of them (a 7x7 noise, 4
# images, NES with 2 directions, Adam): each constant and shape is a program of its
# own to compile, these are compiled once.
SMALL_STEP = {"lam": 0.01, "options": EstimateOptions("nes", num_directions=2, scale=0.05)}


def _small_state():
  return init_query_state(jnp.zeros((7, 7, 1)), optax.adam(0.1), seed=0, validation_size=0)


class _Recording(JaxBlackBox):
  """Records what reaches the model: it must only ever be concrete host arrays."""

  def _score(self, images):
    self.seen = getattr(self, "seen", []) + [type(images)]
    return super()._score(images)


# The step.

def test_step_only_calls_the_model_once_with_all_probes_on_host_arrays(tiny_model):
  model = _Recording(*tiny_model, num_classes=10)
  step = make_query_step(model, optax.adam(0.1), **SMALL_STEP)
  state = _small_state()
  batch = {"image": _images(5), "label": np.arange(5), "mask": np.array([1, 1, 1, 1, 0])}
  for _ in range(2):
    state, metrics = step(state, batch)
  assert model.seen == [np.ndarray, np.ndarray]  # One vectorised call per step.
  assert int(metrics["queries_images"]) == 2 * 2 * 2 * 4  # 2 steps of 2q probes x 4 images.
  assert int(metrics["queries_calls"]) == 2
  assert float(jnp.abs(state["noise"]).sum()) > 0
  with pytest.raises(jax.errors.TracerArrayConversionError):
    jax.grad(lambda x: jnp.sum(model(x)))(jnp.asarray(_images(1)))


@pytest.mark.parametrize("share_directions", [True, False])
def test_estimate_points_along_the_true_gradient(tiny_model, share_directions):
  apply_fn, params = tiny_model
  model = JaxBlackBox(apply_fn, params, num_classes=10)
  true_gradient = make_true_gradient(apply_fn, params, transform="tanh", class_term="hinge")
  # lam=0 as in the top-k test below (the same compiled update): the cosine is of the
  # class term's gradient alone.
  step = make_query_step(model, optax.sgd(0.0), lam=0.0, options=EstimateOptions(
      "nes", num_directions=300, scale=0.01, share_directions=share_directions),
                         true_gradient=true_gradient)
  state = init_query_state(jnp.zeros((4, 4, 1)), optax.sgd(0.0), seed=1, validation_size=0)
  _, metrics = step(state, {"image": _images(4), "label": np.arange(4)})
  assert float(metrics["cosine"]) > 0.6
  assert int(metrics["queries_images"]) == 2 * 300 * 4


def test_a_multi_scale_noise_is_estimated_leaf_by_leaf(tiny_model):
  """A ``{"coarse", "fine"}`` noise: every leaf gets directions and moves; the
  probes cost what one array's would."""
  model = JaxBlackBox(*tiny_model, num_classes=10)
  noise = {"coarse": jnp.zeros((7, 7, 1)), "fine": jnp.zeros((28, 28, 1))}
  step = make_query_step(model, optax.adam(0.1), lam=0.01,
                         options=EstimateOptions("spsa", num_directions=3, scale=0.05))
  state, metrics = step(init_query_state(noise, optax.adam(0.1), seed=0, validation_size=0),
                        {"image": _images(4), "label": np.arange(4)})
  assert jax.tree.map(jnp.shape, state["noise"]) == {"coarse": (7, 7, 1), "fine": (28, 28, 1)}
  assert all(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(state["noise"]))
  assert int(metrics["queries_images"]) == 2 * 3 * 4


def test_images_per_step_caps_the_cost(tiny_model):
  model = JaxBlackBox(*tiny_model, num_classes=10)
  step = make_query_step(model, optax.adam(0.1), **SMALL_STEP, images_per_step=18)
  _, metrics = step(_small_state(), {"image": _images(10), "label": np.zeros(10, int)})
  assert int(metrics["queries_images"]) == 16  # 18 // 2q = 4 images under 4 probes.
  with pytest.raises(ValueError, match="images_per_step=3"):
    make_query_step(model, optax.adam(0.1), **SMALL_STEP, images_per_step=3)


@pytest.mark.parametrize("rank, floor", [(1, 0.9), (9, None)])
def test_a_top_k_reply_holding_the_true_class_gives_the_full_gradient(tiny_model, rank, floor):
  """Top-2 of 10 classes. Where the reply names the true class (here the 2nd most
  likely), the estimate points along the true gradient as with full scores
  (measured: cosine 0.95-0.97 over 3 seeds). Where it hides it (the least likely
  class), only the bound ``min(p_min, 1 - sum)`` moves, which says nothing of the
  true class: the cosine is chance (measured: -0.07 to 0.05)."""
  apply_fn, params = tiny_model
  images = _images(4)
  full = JaxBlackBox(apply_fn, params, num_classes=10)  # Scores compiled, not op by op.
  labels = np.argsort(-np.asarray(full.score(images).probabilities), axis=1)[:, rank]
  model = TopKBlackBox(full, 2)
  true_gradient = make_true_gradient(apply_fn, params, transform="tanh", class_term="hinge")
  step = make_query_step(model, optax.sgd(0.0), lam=0.0,
                         options=EstimateOptions("nes", num_directions=300, scale=0.01),
                         true_gradient=true_gradient)
  state = init_query_state(jnp.zeros((4, 4, 1)), optax.sgd(0.0), seed=1, validation_size=0)
  _, metrics = step(state, {"image": images, "label": labels})
  if floor is not None:
    assert float(metrics["cosine"]) > floor
  else:
    assert abs(float(metrics["cosine"])) < 0.3


# The phase: ledger, resume, budget, selection.

class _Interrupted(Exception):
  pass


# The runs of the phase. No focus: every step then sends the same shapes, compiled once
# (with focus each count of unsettled images is a program of its own).
RUN = {"budget.queries": 1500, "query.focus": 0.0}


@pytest.fixture(scope="module")
def straight_run(tiny_model, digits, data_dir, tmp_path_factory):
  """``(final state, workdir)`` of one uninterrupted run of ``RUN``: what a resumed or
  failed run must end as (the tests only read it)."""
  workdir = tmp_path_factory.mktemp("straight")
  state, _ = fit_noise_by_queries(_digits_config(data_dir, **RUN),
                                  JaxBlackBox(*tiny_model, num_classes=10), digits, workdir)
  return state, workdir


def test_ledger_continues_across_a_resume(tiny_model, digits, data_dir, straight_run, tmp_path,
                                          monkeypatch):
  config = _digits_config(data_dir, **RUN)
  straight, straight_dir = straight_run
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
  # A new process: the ledger comes from the checkpoint.
  resumed, records = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10),
                                          digits, tmp_path / "resumed")
  straight_log = (straight_dir / "metrics.jsonl").read_text().splitlines()
  assert [r["batch"] for r in records] == [json.loads(line)["batch"] for line in straight_log]
  assert {k: int(v) for k, v in resumed["queries"].items()} == \
      {k: int(v) for k, v in straight["queries"].items()}
  np.testing.assert_array_equal(resumed["noise"], straight["noise"])


def test_budget_stops_with_the_best_noise_on_validation(tiny_model, digits, data_dir, tmp_path):
  budget = 600 + 2 * len(digits["validation"])
  config = _digits_config(data_dir, **{**RUN, "budget.queries": budget, "query.significance": 0.0})
  state, _ = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                  tmp_path)
  spent = int(state["queries"]["images"])
  assert spent <= budget
  assert spent + 2 * 2 * 8 > budget - len(digits["validation"])  # Stopped at the budget.
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  scored = [r for r in records if "val_accuracy" in r]
  assert scored[0]["batch"] == 0  # N = 0 is always a candidate.
  best = max(scored, key=lambda r: (r["val_accuracy"], -r["batch"]))
  assert int(state["best"]["batch"]) == best["batch"]
  assert float(state["best"]["val_accuracy"]) == pytest.approx(best["val_accuracy"])
  # The budget is the cosine schedule's clock: lr 0.1 at 0 spent, ~0 at the budget
  # (over 70% of it is spent by the last log).
  rates = [r["learning_rate"] for r in records if "learning_rate" in r]
  assert rates == sorted(rates, reverse=True) and 0.05 < rates[0] <= 0.1 and rates[-1] < 0.05


class _Source(list):
  """Examples in memory, with the one piece of TFDS metadata the pipeline reads."""


class _Constant(BlackBox):
  """A model deaf to its input: no noise can beat N = 0 on validation."""

  num_classes = 10

  def _score(self, images):
    return Reply(np.full((len(images), 10), 0.1, np.float32), Spent(1, len(images)))


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
  state, _ = fit_noise_by_queries(config, _Constant(), sources, tmp_path)
  assert float(state["best"]["val_accuracy"]) == pytest.approx(0.95)
  assert int(state["best"]["batch"]) == 0
  assert not np.asarray(state["best"]["noise"]).any()


def test_call_budget(tiny_model, digits, data_dir, tmp_path):
  """Validation costs 1 call, a batch of 2 updates 2 calls: 4 calls pay for N = 0,
  one batch and the validation after it, the last the budget pays for."""
  config = _digits_config(data_dir, **{"budget.calls": 4})
  state, records = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10),
                                        digits, tmp_path)
  assert int(state["queries"]["calls"]) == 4
  assert [r["batch"] for r in records] == [0, 1]


@pytest.mark.parametrize("overrides, message", [
    ({"budget.queries": -1}, "config.budget.queries=-1"),
    ({"budget.queries": 100}, r"validation split once \(360 images\)"),
    ({"query.estimator": "sspa"}, "config.query.estimator='sspa'"),
    ({"query.scale": 0.0}, "scale > 0"),
    ({"query.images_per_step": 3}, "images_per_step=3"),
    ({"query.focus": 1.5}, "focus=1.5"),
    ({"query.significant_against": "best"}, "significant_against='best'"),
    ({"query.estimator": "cma_es", "query.prior": "previous"}, "evolution strategy"),
])
def test_bad_query_settings_are_refused_before_any_query(tiny_model, data_dir, tmp_path,
                                                         monkeypatch, overrides, message):
  model = _Recording(*tiny_model, num_classes=10)
  monkeypatch.setattr(black_box, "from_config", lambda config: model)
  with pytest.raises(ValueError, match=message):
    query_dft(_digits_config(data_dir, **overrides), str(tmp_path / "bad"))
  assert not getattr(model, "seen", []) and not (tmp_path / "bad").exists()


class _FailingOnCall(JaxBlackBox):
  """Answers ``answered`` calls; in the next, 8 images are answered before the model
  goes away (an HTTP call whose second request ran out of retries)."""

  def __init__(self, *args, answered, **kwargs):
    super().__init__(*args, **kwargs)
    self.answered = answered

  def _score(self, images):
    if self.answered == 0:
      raise with_spent(RuntimeError("the model went away"), Spent(calls=1, images=8, failures=1))
    self.answered -= 1
    return super()._score(images)


class _Interrupting(BlackBox):
  """Answers its focus screening, then is interrupted mid-call after 8 images (Ctrl-C)."""

  num_classes = 10

  def _score(self, images):
    if len(images) > 4:
      raise with_spent(KeyboardInterrupt(), Spent(calls=1, images=8, failures=1))
    return Reply(np.full((len(images), 10), 0.1, np.float32), Spent(1, len(images)))


def test_an_interrupted_step_carries_the_ledger_up_to_it(tiny_model):
  step = make_query_step(_Interrupting(), optax.adam(0.1), **SMALL_STEP, focus=0.5)
  state = _small_state()
  state["queries"] = {name: np.asarray(value, np.int64)
                      for name, value in {"calls": 5, "images": 100, "failures": 0}.items()}
  with pytest.raises(KeyboardInterrupt) as error:
    step(state, {"image": _images(4), "label": np.arange(4)})
  # 5 + 1 screening call + 1 interrupted call; 100 + 4 screened + 8 answered before it.
  assert {k: int(v) for k, v in error.value.ledger.items()} == \
      {"calls": 7, "images": 112, "failures": 1}


def test_queries_spent_before_a_failure_stay_in_the_ledger(tiny_model, digits, data_dir,
                                                           straight_run, tmp_path):
  config = _digits_config(data_dir, **RUN)
  straight, _ = straight_run
  with pytest.raises(RuntimeError, match="went away"):
    fit_noise_by_queries(config, _FailingOnCall(*tiny_model, num_classes=10, answered=5),
                         digits, tmp_path / "failed")
  record = tmp_path / "failed" / FAILED_LEDGER
  assert json.loads(record.read_text())["queries"]["failures"] == 1
  written = [p.stat().st_mtime_ns for p in (tmp_path / "failed" / "checkpoints").rglob("*")]
  assert max(written) <= record.stat().st_mtime_ns  # No checkpoint rewritten after the failure.
  resumed, _ = fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                    tmp_path / "failed")
  spent = {k: int(v) for k, v in resumed["queries"].items()}
  expected = {k: int(v) for k, v in straight["queries"].items()}
  assert spent == {**expected, "calls": expected["calls"] + 1, "images": expected["images"] + 8,
                   "failures": 1}


# The gender-v1 runs all test on fold 2, the k-fold command's only fold too: its faces
# are prepared once for them all (the command finds them prepared).
FACES_FOLD = 2


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("faces"))
  data.prepare(f"lfw_subset/25px_fold{FACES_FOLD}", data_dir)
  return data_dir


def _gender_v1_config(faces_dir, options=""):
  config = query_configs.get_config(f"gender_v1,runlocal,fold={FACES_FOLD}{options}")
  with config.unlocked():
    config.data_dir = faces_dir
    config.budget.queries = 200
  return config


def test_query_dft_on_gender_v1_writes_the_curve_and_resumes(faces_dir, tmp_path):
  config = _gender_v1_config(faces_dir)
  results = query_dft(config, str(tmp_path / "run"))
  fitted = results["queries"]["fit"]
  assert 0 < fitted["images"] <= 200 and fitted["failures"] == 0
  assert results["queries"]["total"]["images"] > fitted["images"]  # Evaluation is counted too.
  assert results["before"]["num_examples"] == 20
  lines = (tmp_path / "run" / "queries.csv").read_text().splitlines()
  assert lines[0] == "batch,queries_images,queries_calls,val_accuracy,best_val_accuracy"
  assert (tmp_path / "run" / "queries.png").is_file()
  again = query_dft(config, str(tmp_path / "run"))
  assert again["queries"]["fit"] == fitted  # Finished: resumed, nothing new spent on fitting.


def test_query_dft_through_a_kserve_server_with_faults(faces_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("DFM_TEST_QUERY_KEY", "sk-query-test-secret")
  server = make_server(resolve_model_path(query_configs.GENDER_V1), model_name="gender-v1",
                       port=0, api_key="sk-query-test-secret", faults=["ok", "503", "429"])
  server.serve_in_background()
  try:
    config = _gender_v1_config(faces_dir, ",via=http")
    with config.unlocked():
      config.black_box.update(url=server.url, api_key_env="DFM_TEST_QUERY_KEY", backoff_s=0.01,
                              max_backoff_s=0.05, batch_size=16)
      config.figures = False  # Drawn in the test above.
    results = query_dft(config, str(tmp_path / "run"))
  finally:
    server.close()
  fitted = results["queries"]["fit"]
  assert fitted["failures"] == 2 and 0 < fitted["images"] <= 200
  assert fitted["calls"] >= fitted["images"] / 16
  written = "".join(p.read_text() for p in (tmp_path / "run").glob("*.*") if p.suffix in
                    (".json", ".jsonl", ".md", ".csv"))
  assert "sk-query-test-secret" not in written and "DFM_TEST_QUERY_KEY" in written


def _same_jax_environment() -> dict[str, str]:
  """This session's 4 CPU devices for a subprocess (the compilation cache comes with the
  environment, tests/conftest.py), so it reads the programs the in-process runs compiled."""
  return {**os.environ, "JAX_NUM_CPU_DEVICES": str(jax.device_count())}


def test_kfold_selects_on_validation_and_reports_test(faces_dir, tmp_path):
  # A grid key of one value is a setting of every run: no figures (none is tested here).
  # The budget pays for the 20 validation images at N = 0, two steps of 2 x 2 x 8 probes
  # and the validation after them: two candidates to select from.
  command = [sys.executable, "-m", "experiments.query_kfold", f"--workdir={tmp_path / 'runs'}",
             f"--data_dir={faces_dir}", "--options=runlocal", f"--folds={FACES_FOLD}",
             "--grid=dft.lr=0.1,0.3", "--grid=figures=False", "--budget=104"]
  result = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parent.parent, env=_same_jax_environment())
  assert result.returncode == 0, result.stderr[-2000:]
  with (tmp_path / "runs" / "kfold.csv").open(newline="") as file:
    rows = list(csv.reader(file))
  assert len(rows) == 2 and rows[1][0] == str(FACES_FOLD)
  chosen = rows[1][1]
  points = {f"dft.lr={lr},figures=False" for lr in ("0.1", "0.3")}
  assert chosen in points
  scored = {point: json.loads((tmp_path / "runs" / f"fold{FACES_FOLD}" / point / "metrics.json")
                              .read_text())["val"]["after"]["accuracy"] for point in points}
  assert scored[chosen] == max(scored.values())


class _Brightness(BlackBox):
  """Two classes: P(class 0) is the image's mean pixel."""

  num_classes = 2

  def _score(self, images):
    bright = images.reshape(len(images), -1).mean(axis=1)
    return Reply(np.stack([bright, 1 - bright], axis=1), Spent(1, len(images)))


def test_focus_probes_only_the_unsettled_images():
  model = _Brightness()
  images = np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.1, 0.2, 0.3, 0.7, 0.8, 0.9)])
  step = make_query_step(model, optax.adam(0.1), **SMALL_STEP, focus=0.5)
  state = init_query_state(jnp.zeros((4, 4, 1)), optax.adam(0.1), seed=0, validation_size=0)
  _, metrics = step(state, {"image": images, "label": np.zeros(6, int)})
  assert float(metrics["probed_share"]) == 0.5  # The three images below 0.5 are probed.
  assert {name: int(metrics[f"queries_{name}"]) for name in ("calls", "images", "failures")} == \
      {"calls": 2, "images": 6 + 2 * 2 * 3, "failures": 0}


def _kept_after(kept_correct, new_correct, level=0.05):
  """The batch of the noise kept after scoring ``new_correct`` against ``kept_correct``."""
  state = init_query_state(jnp.zeros((2, 2, 1)), optax.sgd(0.0), seed=0,
                           validation_size=len(kept_correct))
  spent = Spent(1, len(kept_correct))
  state, _ = keep_best(state, Candidate(np.asarray(kept_correct, bool)), done=0, spent=spent,
                       rule=SelectionRule(level))
  state, _ = keep_best(state, Candidate(np.asarray(new_correct, bool), psnr_db=30.0), done=5,
                       spent=spent, rule=SelectionRule(level, min_psnr=20.0))
  return int(state["best"]["batch"])


def test_selection_keeps_zero_noise_on_a_tie_and_on_a_one_image_gain():
  kept = [1] * 18 + [0] * 2
  assert _kept_after(kept, [0] + [1] * 17 + [1, 0]) == 0  # One lost, one gained: a tie.
  assert _kept_after(kept, [1] * 19 + [0]) == 0  # One gained: p = 0.5.
  assert mcnemar_p_value(np.array(kept, bool), np.ones(20, bool)) == 0.25
  # Thousands of images changing: exact, no float overflow.
  # 1,600 gained against 1,400 lost: 3.7 sigma, p = 1.4e-4.
  assert 1e-4 < mcnemar_p_value(np.arange(3000) < 1400, np.arange(3000) >= 1400) < 2e-4
  many = [1] * 10 + [0] * 10
  assert _kept_after(many, [1] * 15 + [0] * 5) == 5  # Five gained, none lost: p = 1/32.
  assert _kept_after(many, [1] * 11 + [0] * 9, level=0.0) == 5  # Off: any gain replaces.


@pytest.mark.parametrize("against, kept", [("zero", 10), ("kept", 5)])
def test_a_noise_better_than_the_kept_one_replaces_it_if_significant_over_zero_noise(
    against, kept):
  """N = 0 gets 10 of 20 right, the noise of batch 5 gets 16 (p = 1/64 over N = 0),
  that of batch 10 gets 17: significant over N = 0 and one more than the kept noise
  (``zero``), but not significant over the kept noise (``kept``: p = 0.5)."""
  state = init_query_state(jnp.zeros((2, 2, 1)), optax.sgd(0.0), seed=0, validation_size=20)
  rule = SelectionRule(0.05, against=against)
  for done, right in ((0, 10), (5, 16), (10, 17)):
    state, _ = keep_best(state, Candidate(np.arange(20) < right, psnr_db=30.0), done=done,
                         spent=Spent(1, 20), rule=rule)
  assert int(state["best"]["batch"]) == kept


def test_selection_never_keeps_a_noise_below_the_psnr_floor():
  state = init_query_state(jnp.zeros((2, 2, 1)), optax.sgd(0.0), seed=0, validation_size=20)
  rule = SelectionRule(0.05, min_psnr=25.0)
  state, _ = keep_best(state, Candidate(np.zeros(20, bool)), done=0, spent=Spent(1, 20), rule=rule)
  state, _ = keep_best(state, Candidate(np.ones(20, bool), psnr_db=24.9), done=5,
                       spent=Spent(1, 20), rule=rule)
  assert int(state["best"]["batch"]) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_evolution_generation_is_one_call_of_the_black_box(strategy):
  """A population of 4 noises over 6 images: one call of 24 images; the mean moves."""
  model = _Brightness()
  images = np.stack([np.full((4, 4, 1), v, np.float32) for v in (0.1, 0.2, 0.3, 0.7, 0.8, 0.9)])
  step, init = make_evolution_step(model, lam=0.01, strategy=strategy, population=4,
                                   scale=0.1, like=jnp.zeros((4, 4, 1)), frequencies=2)
  state, metrics = step(init(seed=0, validation_size=0),
                        {"image": images, "label": np.zeros(6, int)})
  assert {name: int(metrics[f"queries_{name}"]) for name in ("calls", "images")} == \
      {"calls": 1, "images": 4 * 6}
  assert float(jnp.abs(state["noise"]).max()) > 0


def test_every_evolution_strategy_configures_as_it_runs(tiny_model, data_dir):
  """configs/query.py knows the strategies dfm runs, and sets what they need (focus 0)."""
  assert query_configs.EVOLUTION_STRATEGIES == STRATEGIES
  for strategy in STRATEGIES:
    config = query_configs.get_config(f"digits,estimator={strategy}")
    check_query(config, JaxBlackBox(*tiny_model, num_classes=10), validation_size=360)


# The cosine ceiling: white-box DFT with gradients of a chosen cosine.

def test_a_cosine_step_at_one_is_the_white_box_step_and_ignores_padding(tiny_model):
  apply_fn, params = tiny_model
  images, labels = _images(4), np.array([0, 1, 2, 3])
  padded = {"image": np.concatenate([images, np.zeros_like(images[:2])]),
            "label": np.concatenate([labels, [0, 0]]), "mask": np.array([1, 1, 1, 1, 0, 0.0])}
  step = make_cosine_step(apply_fn, params, optax.adam(0.1), lam=0.01, cosine=1.0)
  state, _ = step(_small_state(), padded)
  white_box = jax.jit(make_update_step(apply_fn, optax.adam(0.1), lam=0.01))
  expected, _ = white_box(init_state(jnp.zeros((7, 7, 1)), optax.adam(0.1)), params,
                          {"image": images, "label": labels})
  np.testing.assert_allclose(state["noise"], expected["noise"], atol=1e-6)


def test_a_cosine_step_moves_along_a_gradient_of_that_cosine(tiny_model):
  apply_fn, params = tiny_model
  batch = {"image": _images(4), "label": np.array([0, 1, 2, 3])}
  true_gradient = make_true_gradient(apply_fn, params, transform="tanh", class_term="hinge")
  step = make_cosine_step(apply_fn, params, optax.adam(0.1), lam=0.01, cosine=0.2)
  state, _ = step(_small_state(), batch)
  exact = true_gradient(jnp.zeros((7, 7, 1)), batch["image"], batch["label"])
  assert float(estimators.cosine(state["estimate"], exact)) == pytest.approx(0.2, abs=1e-4)


# A student distilled from the replies (estimator="distill").

SMALL_STUDENT = StudentOptions(steps=5, lr=1e-2, batch_size=4, replay=16, updates=2)


def _student(tiny_model):
  """The tiny VGG at other initial weights: a student that has to learn the black box."""
  apply_fn, _ = tiny_model
  config = query_configs.get_config("digits,runlocal")
  return apply_fn, models.init_params(models.build_classifier(config.model), (28, 28, 1), 1)


def test_a_distill_step_scores_the_batch_once_and_the_student_learns_the_replies(tiny_model):
  model = _Recording(*tiny_model, num_classes=10)
  step, init = make_distill_step(model, optax.adam(0.1), lam=0.01, student=_student(tiny_model),
                                 image_shape=(28, 28, 1), like=jnp.zeros((7, 7, 1)),
                                 options=SMALL_STUDENT)
  batch = {"image": _images(4), "label": np.array([0, 1, 2, 3])}
  state, losses = init(seed=0, validation_size=0), []
  for _ in range(4):
    state, metrics = step(state, batch)
    losses.append(float(metrics["distill_loss"]))
  assert model.seen == [np.ndarray] * 4  # One call per step, on host arrays.
  assert int(state["queries"]["images"]) == 16 and int(state["queries"]["calls"]) == 4
  assert int(state["replay"]["filled"]) == 16 and int(state["replay"]["next"]) == 0
  assert losses[-1] < losses[0]  # The student moves towards the black box's replies.
  assert np.asarray(state["noise"]).any() and int(state["step"]) == 8  # 2 updates a step.


def test_the_replay_buffer_overwrites_its_oldest_replies():
  replay = add_to_replay(init_replay((1, 1, 1), 2, 3), jnp.arange(2.0).reshape(2, 1, 1, 1),
                         jnp.ones((2, 2)))
  replay = add_to_replay(replay, jnp.full((2, 1, 1, 1), 9.0), jnp.zeros((2, 2)))
  assert np.ravel(replay["images"]).tolist() == [9.0, 1.0, 9.0]
  assert int(replay["filled"]) == 3 and int(replay["next"]) == 1


def test_distill_runs_through_query_dft_and_stops_at_the_budget(tiny_model, digits, data_dir,
                                                                classifier_dir, tmp_path):
  config = _digits_config(data_dir, **{"budget.queries": 1200, "query.estimator": "distill",
                                       "query.focus": 0.0,
                                       "query.updates_per_estimate": 2})
  with config.unlocked():
    config.classifier_dir = classifier_dir
    config.query.surrogate.classifier_dir = classifier_dir  # The black box's own weights.
    config.query.student.update(steps=2, replay=64)
  results = query_dft(config, str(tmp_path / "run"))
  spent = results["queries"]["fit"]["images"]
  # Stopped at the budget: the next batches (2 x 8 images) and validation would pass it.
  assert 1200 - 2 * 8 - len(digits["validation"]) < spent <= 1200


def test_an_interrupted_distill_run_resumes_as_if_never_stopped(tiny_model, digits, data_dir,
                                                                tmp_path, monkeypatch):
  config = _digits_config(data_dir, **{"budget.queries": 2000, "query.estimator": "distill",
                                       "query.focus": 0.0, "query.updates_per_estimate": 2})
  with config.unlocked():
    config.query.student.update(steps=2, replay=16)  # The ring wraps before the stop.

  def run(workdir):
    return fit_noise_by_queries(config, JaxBlackBox(*tiny_model, num_classes=10), digits,
                                workdir, student=_student(tiny_model))[0]

  straight = run(tmp_path / "straight")
  original = loop.run_loop

  def interrupted(state, batches, update, **kwargs):
    def interrupting(state, batch):
      if int(state["step"]) == 3 * 2:  # After 3 batches of 2 updates.
        raise _Interrupted
      return update(state, batch)
    return original(state, batches, interrupting, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(loop, "run_loop", interrupted)
    with pytest.raises(_Interrupted):
      run(tmp_path / "resumed")
  resumed = run(tmp_path / "resumed")
  for part in ("noise", "student", "replay", "queries"):
    jax.tree.map(np.testing.assert_array_equal, resumed[part], straight[part])


def test_distill_without_a_student_is_refused(data_dir):
  config = _digits_config(data_dir, **{"query.estimator": "distill"})
  with pytest.raises(ValueError, match="needs a student model"):
    check_query(config, JaxBlackBox(lambda p, x: x.reshape(len(x), -1)[:, :10], None,
                                    num_classes=10), 20)
