r"""Model fine-tuning (MFT): fine-tune the classifier's weights on the target data.

The paper's baseline for DFT, for when the weights can be changed: Adam for 20
epochs at the paper's lr 0.005 (the digits configs: the lr chosen on validation),
``config.mft``, on all layers or on the dense NNET head only
(``--config.mft.layers=head``). Same data and splits as DFT.

  python -m experiments.mft --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/mft --config.classifier_dir=runs/mnist5k

Writes config.json, checkpoints/, metrics.jsonl, metrics.json (before/after on
validation and test) and report.md with its figures; resumes when started again.
"""
from dfm.run import methods
from experiments.cli import launch

if __name__ == "__main__":
  launch(methods.mft)
