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
from dfm.run import methods
from experiments.cli import launch

if __name__ == "__main__":
  launch(methods.dft_mft)
