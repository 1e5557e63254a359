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
from typing import Any

import ml_collections

from dfm import runs
from dfm.evaluate import make_eval_step
from dfm.results import write_results
from dfm.training import fit_weights
from dfm.workdir import claim_workdir
from experiments.cli import launch


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes the weights, evaluates before/after, writes the outputs; returns metrics."""
  runs.check_schedule(config, "mft")
  apply_fn, params = runs.load_frozen_classifier(config)
  sources = runs.open_splits(config.mft.dataset, config.data_dir, config.model.input_shape)
  workdir = claim_workdir(workdir, config)
  tuned = fit_weights(config, config.mft, apply_fn, params, sources, workdir)
  return write_results(workdir, config, method="mft", dataset=config.mft.dataset,
                       eval_step=make_eval_step(apply_fn, kind=config.dft.transform),
                       kind=config.dft.transform, before=(params, None),
                       after=(tuned, None), sources=sources)


if __name__ == "__main__":
  launch(run)
