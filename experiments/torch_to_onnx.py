r"""The PyTorch route end to end: train a small CNN in PyTorch, export it to ONNX, hand it to dfm.

Needs PyTorch (`.venv/bin/pip install -e '.[bench]'`); dfm itself never imports it.
Trains a CNN (conv, batch norm, ReLU, max-pool, linear) on a prepared digits
dataset's train split, exports it with `torch.onnx.export` (input `images`, NCHW,
batch axis dynamic; output `logits`), checks that onnxruntime gives PyTorch's
logits, and prints the commands that evaluate it and fine-tune data for it, white-box
through its graph:

  python -m experiments.prepare --dataset=mnist5k --data_dir=data
  python -m experiments.prepare --dataset=uci_digits --data_dir=data
  python -m experiments.torch_to_onnx --data_dir=data --out=runs/torch/cnn.onnx

Your own model takes the same one line (after `model.eval()`), with an example input
of its shape, and `config.model.input` declaring its convention (layout, size,
channels, normalisation).
"""
from __future__ import annotations  # torch's types in the hints, torch perhaps absent.

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
from absl import app, flags

try:
  import torch
  from torch import nn
except ImportError:  # --help and --dry_run work without it; a run says how to install it.
  torch = nn = None

from dfm import data
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where mnist5k (or --dataset) is prepared.")
_DATASET = flags.DEFINE_string("dataset", "mnist5k", "A prepared 28x28 gray 10-class dataset.")
_TARGET = flags.DEFINE_string("target", "uci_digits", "The dataset the printed DFT command "
                              "fine-tunes for the model.")
_OUT = flags.DEFINE_string("out", "runs/torch/cnn.onnx", "The ONNX file to write.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the shuffle.")
SHAPE = (28, 28, 1)


def small_cnn(num_classes: int = 10) -> nn.Module:
  """Two conv blocks (conv 3x3, batch norm, ReLU, 2x2 max-pool) and a linear head."""
  return nn.Sequential(
      nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(32 * 7 * 7, num_classes))


def split_arrays(dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
  """``(images [N, 1, 28, 28] float in [0, 1], labels [N])`` of a prepared split."""
  source = data.open_splits(dataset, _DATA_DIR.value, SHAPE)[split]
  images = np.stack([np.asarray(example["image"]) for example in source]) / 255.0
  labels = np.array([example["label"] for example in source])
  return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2), torch.from_numpy(labels)


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
  """Adam at 1e-3, batches of 64, cross-entropy."""
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  generator = torch.Generator().manual_seed(_SEED.value)
  model.train()
  for _ in range(_EPOCHS.value):
    for batch in torch.randperm(len(images), generator=generator).split(64):
      optimizer.zero_grad()
      nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
      optimizer.step()


def export(model: nn.Module, path: Path) -> None:
  """``torch.onnx.export`` of the model in eval mode, batch axis dynamic.

  ``dynamo=False``: the TorchScript exporter, which needs only ``onnx``; the newer
  default (``dynamo=True``) also needs ``onnxscript``.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, *SHAPE[:2]),), str(path),
                      input_names=["images"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)


def dfm_flags(path: Path) -> str:
  """The config overrides that declare this model to configs/own_model.py:onnx."""
  return (f"--config.model.path={path} --config.model.num_classes=10 "
          "--config.model.input_shape='(28,28,1)'")


def run() -> dict:
  """Trains, exports, checks onnxruntime against PyTorch; returns the accuracies."""
  if torch is None:
    raise ValueError("PyTorch is not installed: .venv/bin/pip install -e '.[bench]' (make "
                     "bench installs it too).")
  torch.manual_seed(_SEED.value)
  model, path = small_cnn(), Path(_OUT.value)
  if path.exists():
    raise ValueError(f"{path} exists; pass another --out (nothing is overwritten).")
  train(model, *split_arrays(_DATASET.value, "train"))
  export(model, path)
  results = {}
  session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  for name, dataset in (("source", _DATASET.value), ("target", _TARGET.value)):
    images, labels = split_arrays(dataset, "test")
    with torch.no_grad():
      logits = model(images).numpy()
    onnx_logits = session.run(["logits"], {"images": images.numpy()})[0]
    accuracy = float((logits.argmax(1) == labels.numpy()).mean())
    results[name] = {"dataset": dataset, "test_accuracy": accuracy,
                     "onnxruntime_max_abs_diff": float(np.abs(onnx_logits - logits).max())}
  print(json.dumps(results))
  config = f"--config=configs/own_model.py:onnx,dataset={_TARGET.value}"
  print(f"Wrote {path}. Check it, then fine-tune {_TARGET.value} for it:\n"
        f"  python -m experiments.evaluate {config} --config.data_dir={_DATA_DIR.value} "
        f"{dfm_flags(path)}\n"
        f"  python -m experiments.dft {config} --config.data_dir={_DATA_DIR.value} "
        f"--workdir={path.parent / 'dft'} {dfm_flags(path)}")
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  exit_on_bad_input(run)


if __name__ == "__main__":
  run_app(main)
