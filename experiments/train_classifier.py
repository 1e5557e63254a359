r"""Trains the classifier that data fine-tuning later freezes.

  python -m experiments.train_classifier --config=configs/digits.py:mnist5k \
      --workdir=runs/mnist5k

Writes into the workdir: config.json, checkpoints/ (read by experiments.dft through
--config.classifier_dir), metrics.jsonl and metrics.json (validation and test
accuracy). Starting the same command again resumes from the last checkpoint.
"""
from dfm.run import methods
from experiments.cli import launch

if __name__ == "__main__":
  launch(methods.train_classifier)
