"""One call for notebooks: data and a frozen model in, the noise and before/after out.

:func:`fit_perturbation` runs the same phases as ``experiments.dft`` (white-box,
through the model's gradient) or ``experiments.query_dft`` (query-only, through
a :class:`dfm.black_box.BlackBox`) on NumPy arrays or a prepared dataset, and
evaluates validation and test before and after. Its checkpoints go to a
temporary folder unless you give a ``workdir`` (claimed for this config, as every
run's is); there they resume, and the noise and metrics are kept (``noise.npy``,
``metrics.json``).

Example (from the repository root, where ``configs`` is importable)::

  from configs import own_model
  config = own_model.get_config("onnx")        # the DFT schedule, config.model
  result = fit_perturbation(config, {"train": (x, y), "validation": (xv, yv),
                                     "test": (xt, yt)}, model=(apply_fn, params))
  result["test"]["before"]["accuracy"], result["test"]["after"]["accuracy"]
  perturbed = dfm.perturb(x, result["noise"])   # tanh(arctanh(2x - 1) + N)
"""
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dfm import data, models
from dfm.black_box import BlackBox
from dfm.query import SpentTally, check_query, make_black_box_eval_step
from dfm.run.checks import check_schedule
from dfm.run.evaluate import evaluate_split, make_eval_step
from dfm.run.phases import fit_noise, fit_noise_by_queries, noise_shape
from dfm.run.workdir import claim_workdir, write_json

Model = tuple[models.ApplyFn, Any] | BlackBox | None
Data = str | Mapping[str, tuple[np.ndarray, np.ndarray]]


def _sources(config: ml_collections.ConfigDict, splits: Data) -> dict[str, Any]:
  """A prepared dataset's splits, or arrays checked against ``config.model``."""
  if isinstance(splits, str):
    return data.open_splits(splits, config.data_dir, config.model.input_shape)
  sources = data.array_splits(splits, num_classes=config.model.num_classes)
  found = sources["train"].images.shape[1:]
  if found != tuple(config.model.input_shape):
    raise ValueError(f"The images are {found} but config.model.input_shape is "
                     f"{tuple(config.model.input_shape)}: set it to the images' shape.")
  return sources


def _fit(config: ml_collections.ConfigDict, model: Model, sources: dict[str, Any],
         run_dir: Path) -> tuple[np.ndarray, Any, Any]:
  """``(noise, params, eval_step)``, white-box or by queries as ``model`` says."""
  if isinstance(model, BlackBox):
    check_query(config, model, len(sources["validation"]))
    state, _ = fit_noise_by_queries(config, model, sources, run_dir)
    eval_step = make_black_box_eval_step(model, transform=config.dft.transform,
                                         tally=SpentTally())
    return np.asarray(state["best"]["noise"]), None, eval_step
  apply_fn, params = model if model is not None else models.load_frozen_classifier(config)
  noise = fit_noise(config, config.dft, apply_fn, params, sources, run_dir)
  return noise, params, make_eval_step(apply_fn, transform=config.dft.transform)


def fit_perturbation(config: ml_collections.ConfigDict, splits: Data, model: Model = None,
                     *, workdir: str | None = None) -> dict[str, Any]:
  """Learns the noise of ``config.dft`` on ``splits`` for ``model``, frozen.

  Args:
    config: a DFT config (``configs/own_model.py``, or ``configs/query.py`` for a
      black box): ``dft``, ``model.num_classes``, ``model.input_shape``, and for a
      black box ``query`` and ``budget``.
    splits: ``{"train", "validation", "test"}`` of ``(images, labels)``, images
      ``[N, H, W, C]`` uint8 or float in [0, 1]; or a prepared dataset's name.
    model: ``(apply_fn, params)``, a ``BlackBox`` (query-only DFT), or None: the
      model ``config.model`` names (any kind of :data:`dfm.models.FROZEN_KINDS`).
    workdir: where checkpoints, ``noise.npy`` and ``metrics.json`` are kept (and a
      run resumes); None: nothing is written that outlives the call.

  Returns:
    ``{"noise": array, "validation": {"before", "after"}, "test": {...}}``, each
    an accuracy report (:func:`dfm.run.evaluate.evaluate_split`).
  """
  check_schedule(config, "dft")
  noise_shape(config)
  sources = _sources(config, splits)
  with tempfile.TemporaryDirectory(prefix="dfm_") as scratch:
    run_dir = claim_workdir(workdir, config) if workdir else Path(scratch)
    noise, params, eval_step = _fit(config, model, sources, run_dir)
    result = {split: {"before": evaluate_split(eval_step, params, None, sources[split], config),
                      "after": evaluate_split(eval_step, params, noise, sources[split], config)}
              for split in ("validation", "test")}
    if workdir:
      np.save(run_dir / "noise.npy", noise)
      write_json(run_dir / "metrics.json", result)
  return {"noise": noise, **result}
