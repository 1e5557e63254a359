"""One config for a whole paper experiment: a classifier trained on a source dataset,
then fine-tuned to a target dataset by DFT, MFT and DFT+MFT.

Sections: ``model``, ``train`` (the classifier, on the source), ``dft``, ``mft`` and
``dft_mft`` (on the target), ``classifier_dir``. Intra-dataset: source = target.
"""
import ml_collections

from configs import common, digits, faces
from dfm.data import parse_name

DIGITS = ("mnist5k", "uci_digits")
FACES = ("lfw_subset", "celeba", "lfw", "muct")
# The paper calls the attribute Gender; the datasets call it Male.
ATTRIBUTE_ALIASES = {"gender": "male"}
GENDER_ONLY = ("lfw_subset", "muct")
# MFT's Adam learning rate per digits target, chosen on the target's validation split
# among 1e-4, 1e-3 and 5e-3 (the paper's), all layers or the head (README, "MFT").
DIGITS_MFT_LR = {"uci_digits": 1e-4, "mnist5k": 1e-3}
# DFT+MFT: rounds of 1 DFT epoch then 4 MFT epochs, the budgets of DFT (5 epochs) and
# MFT (20 epochs) alone.
DFT_MFT_ROUNDS = 5
OPTIONS = {"runlocal": False, "size": 0, "fold": 0, "protocol": "random"}


def _attribute(family: str, attribute: str) -> str:
  """The dataset's name for ``attribute`` (``gender`` -> ``male``), checked for the family."""
  if attribute in OPTIONS:
    raise ValueError(f"{attribute!r} is an option, not an attribute: write ',{attribute}' "
                     "after the experiment name, e.g. inter.py:celeba-lfw:smiling,runlocal.")
  attribute = ATTRIBUTE_ALIASES.get(attribute or "gender", attribute)
  if family in GENDER_ONLY and attribute != "male":
    raise ValueError(f"{family} has one attribute, gender; drop ':{attribute}'.")
  return attribute


def _dataset(family: str, attribute: str, options: ml_collections.ConfigDict
             ) -> tuple[str, tuple[int, ...], int]:
  """``(prepared dataset name, image shape, number of classes)`` of a family.

  Raises:
    ValueError: an unknown family, or an attribute it does not have.
  """
  if family in DIGITS:
    if attribute:
      raise ValueError(f"{family} has one label, the digit; drop ':{attribute}'.")
    return family, digits.DIGITS_SHAPE, 10
  if family not in FACES:
    raise ValueError(f"Unknown dataset {family!r}; use one of {DIGITS + FACES}.")
  face_options = ml_collections.ConfigDict(options.to_dict())
  face_options.attribute = _attribute(family, attribute)
  name, shape = faces.face_dataset(face_options, family)
  parse_name(name)  # Names the valid attributes when the builder has no such config.
  return name, shape, 2


def _model_finetuning(target: str, dataset: str, batch_size: int) -> ml_collections.ConfigDict:
  """``config.mft``: the paper's MFT, Adam for 20 epochs on all layers, at lr 0.005
  (the digits: the lr chosen on validation, ``DIGITS_MFT_LR``)."""
  return ml_collections.ConfigDict({
      "dataset": dataset, "optimizer": "adam", "lr": DIGITS_MFT_LR.get(target, 0.005),
      "epochs": 20, "batch_size": batch_size, "layers": "all",
      **common.FEW_LABELS})


def _shrink(config: ml_collections.ConfigDict) -> None:
  """``runlocal``: seconds-long runs of every section, with their own classifier."""
  config.train.update(epochs=1, batch_size=8 if config.train.batch_size < 128 else 128)
  config.dft.update(batch_size=min(config.dft.batch_size, 256), updates_per_batch=2, epochs=1)
  config.mft.update(epochs=1)
  config.probe.update(epochs=1)
  config.dft_mft.update(rounds=2, dft_epochs=1, mft_epochs=1)
  config.classifier_dir += "_runlocal"
  config.checkpoint_every = config.log_every = 2


def build(source: str, target: str, attribute: str, options: str) -> ml_collections.ConfigDict:
  """The locked config of one experiment; ``options`` as in ``configs.common.parse_arg``."""
  parsed = common.parse_arg(options, name="", **OPTIONS)
  if parsed.name:
    raise ValueError(f"Unexpected config argument {parsed.name!r}; options are {sorted(OPTIONS)}.")
  source_name, source_shape, num_classes = _dataset(source, attribute, parsed)
  target_name, target_shape, target_classes = _dataset(target, attribute, parsed)
  if (source_shape, num_classes) != (target_shape, target_classes):
    raise ValueError(
        f"{source_name} has {num_classes} classes of {source_shape} images but {target_name} "
        f"has {target_classes} of {target_shape}: one classifier cannot serve both.")
  config = common.run_defaults(ml_collections.ConfigDict())
  config.model = common.model_config("tiny" if parsed.runlocal else "vgg6",
                                     num_classes=num_classes, input_shape=source_shape)
  is_digits = source in DIGITS
  config.train = (digits.classifier_training(source_name) if is_digits
                  else faces.classifier_training(source, source_name))
  config.classifier_dir = f"runs/{source_name.replace('/', '_')}"
  config.dft = (digits.data_finetuning(target_name) if is_digits
                else faces.data_finetuning(target, target_name))
  config.mft = _model_finetuning(target, target_name, config.train.batch_size)
  config.probe = common.linear_probe(target_name, config.train.batch_size)
  epochs_per_round = {"dft_epochs": config.dft.epochs // DFT_MFT_ROUNDS,
                      "mft_epochs": config.mft.epochs // DFT_MFT_ROUNDS}
  config.dft_mft = ml_collections.ConfigDict({"rounds": DFT_MFT_ROUNDS, **epochs_per_round})
  if parsed.runlocal:
    _shrink(config)
  config.lock()
  return config
