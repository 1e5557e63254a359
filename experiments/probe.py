r"""The linear probe: a new linear output layer on the frozen classifier's features.

The standard transfer baseline beside DFT and MFT: the layer that maps the
penultimate features to the class scores is set to zeros and trained alone (Adam,
``config.probe``), every other weight frozen, on ``config.probe.dataset`` (the experiment's target, as
DFT's); with ``--config.probe.examples_per_class=K`` only K labelled images per class.

  python -m experiments.probe --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/probe --config.classifier_dir=runs/mnist5k

Writes config.json, checkpoints/, metrics.jsonl, metrics.json (before/after on
validation and test) and report.md with its figures; resumes when started again.
"""
from dfm.run import methods
from experiments.cli import launch

if __name__ == "__main__":
  launch(methods.probe)
