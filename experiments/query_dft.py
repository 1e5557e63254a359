r"""Query-only DFT: learn the noise of a model that can only be scored.

  python -m experiments.query_dft --config=configs/query.py:gender_v1 \
      --workdir=runs/query/gender_v1 --config.budget.queries=100000

The model is a black box (`config.black_box.kind`): `jax` (a classifier checkpoint
seen only through its scores), `onnx` (a file run by onnxruntime) or `http` (a
KServe V2 server). Writes into the workdir: config.json, checkpoints/,
metrics.jsonl, queries.csv and queries.png (validation accuracy against queries
spent), noise.npy, noise.png, metrics.json (before/after on validation and test,
and the query ledger) and report.md. Starting the same command again resumes from
the last checkpoint, and the query count with it.
"""
from typing import Any

import jax
import ml_collections

from dfm import runs
from dfm.black_box import BlackBox, JaxBlackBox, TopKBlackBox, ledger_ints
from dfm.dft import make_loss_fn
from dfm.kserve import HttpBlackBox
from dfm.model_input import InputSpec
from dfm.onnx_model import OnnxBlackBox, resolve_model_path
from dfm.query_dft import TrueGradient
from dfm.query_training import (check_query, fit_noise_by_queries, make_black_box_eval_step,
                                write_query_curve)
from dfm.report import append_queries
from dfm.results import write_results
from dfm.training import noise_shape
from dfm.workdir import claim_workdir, write_json
from experiments.cli import launch

BLACK_BOX_KINDS = ("jax", "onnx", "http")


def _true_gradient(config: ml_collections.ConfigDict, apply_fn, params) -> TrueGradient:
  """The white-box ``d class_term / d noise``: for the cosine diagnostic only."""
  loss_fn = make_loss_fn(apply_fn, lam=0.0, kind=config.dft.transform,
                         class_term=config.dft.class_term)
  return jax.jit(lambda noise, images, labels: jax.grad(
      lambda n: loss_fn(n, params, {"image": images, "label": labels})[0])(noise))


def open_black_box(config: ml_collections.ConfigDict) -> tuple[BlackBox, TrueGradient | None]:
  """The model of ``config.black_box`` and, for a JAX model with ``config.query.cosine``,
  its true gradient (never used to update the noise)."""
  box = config.black_box
  if box.kind not in BLACK_BOX_KINDS:
    raise ValueError(f"config.black_box.kind={box.kind!r} is not one of {BLACK_BOX_KINDS}.")
  num_classes, true_gradient = config.model.num_classes, None
  if box.kind == "jax":
    apply_fn, params = runs.load_frozen_classifier(config)
    model = JaxBlackBox(apply_fn, params, num_classes=num_classes)
    if config.query.cosine:
      true_gradient = _true_gradient(config, apply_fn, params)
  elif box.kind == "onnx":
    model = OnnxBlackBox(resolve_model_path(box.path), InputSpec.from_config(box.input),
                         input_name=box.input_name, output_name=box.output_name,
                         output_kind=box.output_kind, num_classes=num_classes,
                         classes_name=box.classes_name)
  else:
    model = HttpBlackBox(
        box.url, box.model_name, InputSpec.from_config(box.input), input_name=box.input_name,
        output_name=box.output_name, output_kind=box.output_kind, num_classes=num_classes,
        classes_name=box.classes_name, batch_size=box.batch_size, api_key_env=box.api_key_env,
        timeout_s=box.timeout_s, max_retries=box.max_retries, backoff_s=box.backoff_s,
        max_backoff_s=box.max_backoff_s)
  if config.query.cosine and true_gradient is None:
    raise ValueError("config.query.cosine needs the true gradient, which only a JAX model "
                     "(config.black_box.kind='jax') has.")
  return (TopKBlackBox(model, box.top_k) if box.top_k else model), true_gradient


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fits the noise by queries, evaluates before/after through the model, writes outputs.

  Everything is checked (config, model, data) before the workdir is claimed.
  """
  runs.check_schedule(config, "dft")
  model, true_gradient = open_black_box(config)
  sources = runs.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  check_query(config, model, len(sources["validation"]))
  noise_shape(config)
  workdir = claim_workdir(workdir, config)
  state = fit_noise_by_queries(config, model, sources, workdir, true_gradient=true_gradient)
  curve = write_query_curve(workdir)
  fitted = ledger_ints(state["queries"])
  model.counts = dict(fitted)
  best = state["best"]
  queries = {"fit": fitted, "budget": config.budget.to_dict(),
             "chosen": {"batch": int(best["batch"]), "images": int(best["images"]),
                        "val_accuracy": float(best["val_accuracy"])},
             "curve_points": len(curve)}
  results = write_results(
      workdir, config, method="query_dft", dataset=config.dft.dataset,
      eval_step=make_black_box_eval_step(model, kind=config.dft.transform),
      kind=config.dft.transform, before=(None, None), after=(None, best["noise"]),
      sources=sources, extra={"queries": queries})
  queries["total"] = ledger_ints(model.counts)  # The final evaluation counted too.
  write_json(workdir / "metrics.json", results)
  append_queries(workdir, queries)
  print(f"Queries: {fitted['images']} images in {fitted['calls']} calls to fit and select "
        f"({fitted['failures']} failed); {queries['total']['images']} with the final "
        f"evaluation.", flush=True)
  return results


if __name__ == "__main__":
  launch(run)
