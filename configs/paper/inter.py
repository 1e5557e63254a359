r"""Inter-dataset experiments (the paper's Tables 5-6, Figs. 7-10): a classifier trained
on SOURCE, fine-tuned to TARGET; selection on TARGET's validation split, test reported.

  --config=configs/paper/inter.py:SOURCE-TARGET[:ATTRIBUTE][,options]

Datasets and attributes as in ``configs/paper/intra.py``; both must give images of
one shape and the same classes. The paper's rows:

  Table 5 (gender)   muct-lfw, muct-celeba, lfw-muct, lfw-celeba, celeba-muct, celeba-lfw
  Table 6            celeba-lfw:{smiling,bushy_eyebrows,pale_skin}
                     lfw-celeba:{smiling,wearing_lipstick} (LFW has no single
                     "Attractive", only "Attractive Man" and "Attractive Woman")
  Digits analogue    mnist5k-uci_digits, uci_digits-mnist5k

  python -m experiments.compare --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/paper/mnist5k-uci_digits
"""
import ml_collections

from configs.paper import experiment


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``SOURCE-TARGET[:ATTRIBUTE][,options]``: see the module docstring."""
  name, _, options = arg.partition(",")
  pair, _, attribute = name.partition(":")
  source, dash, target = pair.partition("-")
  if not dash or not target:
    raise ValueError(f"Expected SOURCE-TARGET, e.g. mnist5k-uci_digits or celeba-lfw:smiling; "
                     f"got {pair!r}.")
  return experiment.build(source, target, attribute, options)
