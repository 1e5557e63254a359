r"""DFT+MFT: alternate rounds of data fine-tuning and model fine-tuning.

The paper's combination (performed "iteratively"): each round learns the noise
with the weights fixed (DFT, ``dft_mft.dft_epochs``), then fine-tunes the weights
on the perturbed images with the noise fixed (MFT, ``dft_mft.mft_epochs``). The
next round starts from both, with a fresh optimizer and its own shuffle order
(seed ``config.seed + ROUND_SEED_STRIDE * round``). Only possible where the weights
may change.

  python -m experiments.dft_mft --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/dft_mft --config.classifier_dir=runs/mnist5k --config.dft_mft.rounds=3

Writes round<r>/{dft,mft}/ (each with checkpoints/ and metrics.jsonl), noise.npy,
noise.png, metrics.json and report.md; resumes within any round when started again.
"""
from typing import Any

import ml_collections

from dfm import runs
from dfm.evaluate import make_eval_step
from dfm.results import write_results
from dfm.training import fit_noise, fit_weights, noise_shape
from dfm.workdir import claim_workdir
from experiments.cli import launch

ROUND_SEED_STRIDE = 1000


def _with_epochs(schedule: ml_collections.ConfigDict, epochs: int) -> ml_collections.ConfigDict:
  phase = ml_collections.ConfigDict(schedule.to_dict())
  phase.epochs = epochs
  return phase


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the rounds, evaluates before/after, writes the outputs; returns metrics."""
  runs.check_schedule(config, "dft_mft")
  apply_fn, frozen = runs.load_frozen_classifier(config)
  sources = runs.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  noise_shape(config)
  workdir = claim_workdir(workdir, config)
  dft = _with_epochs(config.dft, config.dft_mft.dft_epochs)
  mft = _with_epochs(config.mft, config.dft_mft.mft_epochs)
  params, noise = frozen, None
  for round_index in range(config.dft_mft.rounds):
    round_dir = workdir / f"round{round_index}"
    print(f"DFT+MFT round {round_index + 1}/{config.dft_mft.rounds}: DFT", flush=True)
    data_seed = config.seed + ROUND_SEED_STRIDE * round_index
    noise = fit_noise(config, dft, apply_fn, params, sources, round_dir / "dft", noise=noise,
                      data_seed=data_seed)
    print(f"DFT+MFT round {round_index + 1}/{config.dft_mft.rounds}: MFT", flush=True)
    params = fit_weights(config, mft, apply_fn, params, sources, round_dir / "mft", noise=noise,
                         kind=config.dft.transform, data_seed=data_seed)
  return write_results(workdir, config, method="dft_mft", dataset=config.dft.dataset,
                       eval_step=make_eval_step(apply_fn, kind=config.dft.transform),
                       kind=config.dft.transform, before=(frozen, None),
                       after=(params, noise), sources=sources)


if __name__ == "__main__":
  launch(run)
