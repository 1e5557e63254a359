"""One config for a whole paper experiment: a classifier trained on a source dataset,
then fine-tuned to a target dataset by DFT, MFT and DFT+MFT.

Sections: ``model``, ``train`` (the classifier, on the source), ``dft``, ``mft`` and
``dft_mft`` (on the target), ``classifier_dir``. Intra-dataset: source = target.
"""
import math

import ml_collections

from configs import common, digits, faces

DIGITS = ("mnist5k", "uci_digits")
FACES = ("lfw_subset", "celeba", "lfw", "muct")
# The paper calls the attribute Gender; the datasets call it Male.
ATTRIBUTE_ALIASES = {"gender": "male"}
OPTIONS = {"runlocal": False, "size": 0, "fold": 0, "protocol": "random"}


def _dataset(family: str, attribute: str, options: ml_collections.ConfigDict
             ) -> tuple[str, tuple[int, ...], int]:
  """``(prepared dataset name, image shape, number of classes)`` of a family."""
  if family in DIGITS:
    if attribute:
      raise ValueError(f"{family} has one label, the digit; drop ':{attribute}'.")
    return family, digits.DIGITS_SHAPE, 10
  if family not in FACES:
    raise ValueError(f"Unknown dataset {family!r}; use one of {DIGITS + FACES}.")
  face_options = ml_collections.ConfigDict(options.to_dict())
  face_options.attribute = ATTRIBUTE_ALIASES.get(attribute or "gender", attribute)
  name, shape = faces.face_dataset(face_options, family)
  return name, shape, 2


def _classifier_training(family: str, dataset: str) -> ml_collections.ConfigDict:
  """The classifier's schedule on the source: the paper's 20 epochs with Adam at the
  per-family learning rate and batch of ``configs/digits.py`` and ``configs/faces.py``."""
  train = common.classifier_training(dataset)
  train.lr = 1e-3
  if family == "mnist5k":
    train.epochs = 8
  if family == "lfw_subset":
    train.update(batch_size=20, epochs=40)
  return train


def _model_finetuning(dataset: str, batch_size: int) -> ml_collections.ConfigDict:
  """``config.mft``: the paper's MFT, Adam lr 0.005 for 20 epochs, all layers."""
  return ml_collections.ConfigDict({
      "dataset": dataset, "optimizer": "adam", "lr": 0.005, "epochs": 20,
      "batch_size": batch_size, "layers": "all"})


def _data_finetuning(family: str, dataset: str) -> ml_collections.ConfigDict:
  dft = common.dft_schedule(dataset)
  if family in DIGITS:
    dft.update(lam=digits.DIGITS_LAM, lr=digits.DIGITS_LR, lr_schedule=digits.DIGITS_LR_SCHEDULE)
  else:
    dft.update(lam=0.01, lr=0.1, lr_schedule="cosine")
  if family == "lfw_subset":
    dft.batch_size = faces.NUM_LFW_SUBSET_TRAIN
  return dft


def _shrink(config: ml_collections.ConfigDict) -> None:
  """``runlocal``: seconds-long runs of every section."""
  config.train.update(epochs=1, batch_size=8 if config.train.batch_size < 128 else 128)
  config.dft.update(batch_size=min(config.dft.batch_size, 256), updates_per_batch=2, epochs=1)
  config.mft.update(epochs=1)
  config.dft_mft.update(dft_epochs=1, mft_epochs=1)
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
  config.train = _classifier_training(source, source_name)
  config.classifier_dir = f"runs/{source_name.replace('/', '_')}"
  config.dft = _data_finetuning(target, target_name)
  config.mft = _model_finetuning(target_name, config.train.batch_size)
  rounds = 2
  config.dft_mft = ml_collections.ConfigDict({
      "rounds": rounds, "dft_epochs": math.ceil(config.dft.epochs / rounds),
      "mft_epochs": math.ceil(config.mft.epochs / rounds)})
  if parsed.runlocal:
    _shrink(config)
  config.lock()
  return config
