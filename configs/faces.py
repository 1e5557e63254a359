r"""Faces: gender on the 100 real LFW crops that scikit-image ships (`lfw_subset`).

The paper's intra-dataset protocol in miniature: the classifier is trained on one
fold split's train part, frozen, and DFT learns one noise on the same train part;
hyperparameters are read on validation, test is only reported. `fold=K` picks
which of the 5 stratified folds is test (K+1 is validation), `size=S` the stored
crop size (25 is the original).

  python -m experiments.prepare --dataset=lfw_subset/25px_fold0 --data_dir=data
  python -m experiments.train_classifier --config=configs/faces.py:lfw_subset \
      --workdir=runs/lfw_subset
  python -m experiments.dft --config=configs/faces.py:lfw_subset_dft \
      --workdir=runs/lfw_subset_dft --config.classifier_dir=runs/lfw_subset

Add `,runlocal` for a seconds-long smoke run, `,fold=2` or `,size=32` to change the
split or the size (the same for both commands).
"""
import ml_collections

from configs import common

NUM_TRAIN_FACES = 60  # Three of the five folds of 100 faces.


def get_config(arg: str = "lfw_subset_dft") -> ml_collections.ConfigDict:
  """``lfw_subset``: train the classifier; ``lfw_subset_dft``: DFT on the same data."""
  arg = common.parse_arg(arg, name="", runlocal=False, fold=0, size=25)
  dataset = f"lfw_subset/{arg.size}px_fold{arg.fold}"
  config = common.run_defaults(ml_collections.ConfigDict())
  config.model = common.model_config(
      "tiny" if arg.runlocal else "vgg6", num_classes=2, input_shape=(arg.size, arg.size, 1))
  if arg.name == "lfw_subset":
    config.train = common.classifier_training(dataset)
    config.train.update(lr=1e-3, epochs=1 if arg.runlocal else 40, batch_size=20)
    config.checkpoint_every = config.log_every = 15
  elif arg.name == "lfw_subset_dft":
    config.classifier_dir = "runs/lfw_subset"
    config.dft = common.dft_schedule(dataset)
    # The whole train part is one batch; lam scaled like the digits' (see README).
    config.dft.update(batch_size=NUM_TRAIN_FACES, lam=0.01, lr=0.1, lr_schedule="cosine")
    if arg.runlocal:
      config.dft.update(updates_per_batch=2, epochs=1)
      config.checkpoint_every = config.log_every = 2
  else:
    raise ValueError(f"Unknown config {arg.name!r}; use lfw_subset or lfw_subset_dft.")
  config.lock()
  return config
