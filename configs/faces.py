r"""Faces: a classifier per facial attribute, then DFT with it frozen.

`DATASET` trains the classifier, `DATASET_dft` learns one noise for the same
dataset's train split with that classifier frozen (the paper's intra-dataset
protocol); hyperparameters are read on validation, test is only reported.

  DATASET       options                                   the paper's attributes
  lfw_subset    size=25, fold=0..4 (test fold)            male (embedded, no download)
  celeba        size=64, attribute=male                   male, smiling, attractive,
                                                          wearing_lipstick, bushy_eyebrows,
                                                          pale_skin
  lfw           size=64, attribute=male, protocol=random  male, smiling, bushy_eyebrows,
                (or identity)                             pale_skin, wearing_lipstick
  muct          size=64                                   gender (the only label)

  python -m experiments.prepare --dataset=lfw_subset/25px_fold0 --data_dir=data
  python -m experiments.train_classifier --config=configs/faces.py:lfw_subset \
      --workdir=runs/lfw_subset_25px_fold0
  python -m experiments.dft --config=configs/faces.py:lfw_subset_dft \
      --workdir=runs/lfw_subset_25px_fold0_dft
  python -m experiments.train_classifier \
      --config=configs/faces.py:celeba,attribute=smiling --workdir=runs/celeba_64px_smiling

A DFT config looks for its classifier in `runs/<dataset with / as _>` (as above);
`--config.classifier_dir=DIR` points elsewhere.

Options go after the name, e.g. `configs/faces.py:lfw_dft,attribute=smiling,protocol=identity`
(the same for both commands); `,runlocal` shrinks any of them to seconds.
"""
import ml_collections

from configs import common

NUM_LFW_SUBSET_TRAIN = 60  # Three of the five folds of 100 faces.


def face_dataset(arg: ml_collections.ConfigDict, family: str) -> tuple[str, tuple[int, int, int]]:
  """The prepared dataset's name and image shape, from the parsed options."""
  if family == "lfw_subset":
    size = arg.size or 25
    return f"lfw_subset/{size}px_fold{arg.fold}", (size, size, 1)
  size = arg.size or 64
  if family == "celeba":
    return f"celeba/{size}px_{arg.attribute}", (size, size, 3)
  if family == "lfw":
    return f"lfw/{size}px_{arg.attribute}_{arg.protocol}", (size, size, 3)
  if family == "muct":
    return f"muct/{size}px", (size, size, 3)
  raise ValueError(f"Unknown face dataset {family!r}; use lfw_subset, celeba, lfw or muct "
                   "(with _dft for data fine-tuning).")


def classifier_training(family: str, dataset: str) -> ml_collections.ConfigDict:
  """``config.train`` of a face classifier: Adam at lr 1e-3 (the paper's 20 epochs;
  40 with batches of 20 for the 60 training faces of lfw_subset)."""
  train = common.classifier_training(dataset)
  train.update(lr=1e-3, batch_size=20 if family == "lfw_subset" else 128)
  if family == "lfw_subset":
    train.epochs = 40
  return train


def data_finetuning(family: str, dataset: str) -> ml_collections.ConfigDict:
  """``config.dft`` for faces: the paper's schedule with lam scaled like the digits'
  (README, "The scale of lam"); lfw_subset's 60 training faces make one batch."""
  dft = common.dft_schedule(dataset)
  dft.update(lam=0.01, lr=0.1, lr_schedule="cosine")
  if family == "lfw_subset":
    dft.batch_size = NUM_LFW_SUBSET_TRAIN
  return dft


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``DATASET``: train the classifier; ``DATASET_dft``: DFT with it (module docstring)."""
  arg = common.parse_arg(arg, name="", runlocal=False, size=0, fold=0, attribute="male",
                         protocol="random")
  family = arg.name.removesuffix("_dft")
  dataset, shape = face_dataset(arg, family)
  config = common.run_defaults(ml_collections.ConfigDict())
  config.model = common.model_config(
      "tiny" if arg.runlocal else "vgg6", num_classes=2, input_shape=shape)
  if arg.name == family:
    config.train = classifier_training(family, dataset)
    if arg.runlocal:
      config.train.update(epochs=1, batch_size=8)
  else:
    config.classifier_dir = f"runs/{dataset.replace('/', '_')}"
    config.dft = common.dft_schedule(dataset)
    # lam scaled like the digits' (README, "The scale of lam"); choose it on validation.
    config.dft.update(lam=0.01, lr=0.1, lr_schedule="cosine")
    if family == "lfw_subset":
      config.dft.batch_size = NUM_LFW_SUBSET_TRAIN  # The whole train split, one batch.
    if arg.runlocal:
      config.dft.update(batch_size=8, updates_per_batch=2, epochs=1)
  if arg.runlocal:
    config.checkpoint_every = config.log_every = 2
  config.lock()
  return config
