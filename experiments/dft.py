r"""Data fine-tuning: learn one noise that makes a frozen classifier fit a dataset.

  python -m experiments.dft --config=configs/digits.py:mnist5k_to_uci \
      --workdir=runs/mnist5k_to_uci --config.classifier_dir=runs/mnist5k \
      --config.dft.lam=0.1

Writes into the workdir: config.json, checkpoints/, metrics.jsonl (training log),
noise.npy, noise.png, metrics.json (before/after on validation and test) and
report.md with its figures. Starting the same command again resumes from the
last checkpoint.

Several processes (hosts) train one noise together when started under SLURM's
srun, or each with --coordinator_address, --num_processes and --process_id;
process 0 writes the files:

  srun --nodes=2 --ntasks-per-node=8 --gres=gpu:8 python -m experiments.dft \
      --config=configs/digits.py:mnist5k_to_uci --workdir=runs/mnist5k_to_uci
"""
from dfm.run import methods
from experiments.cli import launch

if __name__ == "__main__":
  launch(methods.dft, multi_host=True)
