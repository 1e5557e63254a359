r"""Intra-dataset experiments (the paper's Tables 2-4): classifier and fine-tuning on
one dataset; selection on its validation split, test reported.

  --config=configs/paper/intra.py:DATASET[:ATTRIBUTE][,options]

  DATASET     ATTRIBUTE (paper's tables)                       prepared dataset
  mnist5k     (none: digits)                                   mnist5k
  uci_digits  (none: digits)                                   uci_digits
  lfw_subset  gender                                           lfw_subset/25px_fold{fold}
  celeba      gender, smiling, attractive, wearing_lipstick    celeba/{size}px_{attribute}
  lfw         gender, smiling, bushy_eyebrows, pale_skin,      lfw/{size}px_{attribute}_{protocol}
              wearing_lipstick
  muct        gender                                           muct/{size}px

Options: runlocal, size=64, fold=0, protocol=random|identity. Examples:

  python -m experiments.compare --config=configs/paper/intra.py:uci_digits --workdir=runs/paper/intra_uci
  python -m experiments.compare --config=configs/paper/intra.py:lfw:smiling --workdir=runs/paper/intra_lfw_smiling
"""
import ml_collections

from configs.paper import experiment


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``DATASET[:ATTRIBUTE][,options]``: see the module docstring."""
  name, _, options = arg.partition(",")
  dataset, _, attribute = name.partition(":")
  return experiment.build(dataset, dataset, attribute, options)
