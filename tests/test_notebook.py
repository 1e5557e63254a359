"""dfm.run.notebook.fit_perturbation: arrays and a model in, noise and before/after out."""
import jax
import ml_collections
import numpy as np
import pytest

from configs import own_model, query
from dfm.black_box import JaxBlackBox
from dfm.run.notebook import fit_perturbation
from flax_models import LinenCnn


def _arrays(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
  """Two classes the untrained CNN tells apart badly: bright and dark 6x6 images."""
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % 2
  images = np.clip(rng.uniform(0.1, 0.4, (count, 6, 6, 1)) + 0.5 * labels[:, None, None, None],
                   0, 1)
  return images.astype(np.float32), labels


SPLITS = {"train": _arrays(0, 16), "validation": _arrays(1, 8), "test": _arrays(2, 8)}


def _config(name: str, module) -> ml_collections.ConfigDict:
  config = module.get_config(f"{name},runlocal")
  with config.unlocked():
    config.model.num_classes, config.model.input_shape = 2, (6, 6, 1)
    config.eval_batch_size = 8
  return config


def _linen():
  module = LinenCnn(num_classes=2)
  variables = module.init(jax.random.key(0), SPLITS["test"][0], train=False)
  return lambda params, x: module.apply(params, x, train=False), variables


def test_white_box_on_arrays_writes_nothing_unless_asked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  result = fit_perturbation(_config("onnx", own_model), SPLITS, model=_linen())
  assert result["noise"].shape == (6, 6, 1) and np.abs(result["noise"]).max() > 0
  assert result["test"]["before"]["num_examples"] == 8 and "psnr_db" in result["test"]["after"]
  assert not list(tmp_path.iterdir())
  kept = fit_perturbation(_config("onnx", own_model), SPLITS, model=_linen(),
                          workdir=str(tmp_path / "run"))
  np.testing.assert_array_equal(np.load(tmp_path / "run" / "noise.npy"), kept["noise"])
  np.testing.assert_array_equal(kept["noise"], result["noise"])


def test_query_only_on_arrays_through_a_black_box():
  apply_fn, params = _linen()
  result = fit_perturbation(_config("gender_v1", query), SPLITS,
                            model=JaxBlackBox(apply_fn, params, num_classes=2))
  white_box = fit_perturbation(_config("onnx", own_model), SPLITS, model=(apply_fn, params))
  assert result["noise"].shape == (6, 6, 1)
  assert result["test"]["before"] == white_box["test"]["before"]  # Scores through the box.


@pytest.mark.parametrize("change, message", [
    ({"validation": None}, r"No \['validation'\] arrays"),
    ({"test": (SPLITS["test"][0] * 2, SPLITS["test"][1])}, r"test arrays: float image has "
                                                            r"values in \[.*\]; floats must lie"),
    ({"train": (SPLITS["train"][0], SPLITS["train"][1][:3])}, r"16 images but 3 labels"),
    ({"test": (SPLITS["test"][0][:, :5], SPLITS["test"][1])}, r"differ in shape"),
])
def test_bad_arrays_are_named(change, message):
  splits = {key: value for key, value in {**SPLITS, **change}.items() if value is not None}
  with pytest.raises(ValueError, match=message):
    fit_perturbation(_config("onnx", own_model), splits, model=_linen())
