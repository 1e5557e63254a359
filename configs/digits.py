r"""Digits: a VGG trained on MNIST digits, data fine-tuned for UCI digits.

The inter-dataset case of the paper in miniature: the classifier is trained on
`mnist5k` (5,000 real MNIST digits) and frozen; DFT learns one noise that makes it
more accurate on `uci_digits` (1,797 real UCI digits at 28x28).

  python -m experiments.prepare --dataset=mnist5k --data_dir=data
  python -m experiments.prepare --dataset=uci_digits --data_dir=data
  python -m experiments.train_classifier --config=configs/digits.py:mnist5k \
      --workdir=runs/mnist5k
  python -m experiments.dft --config=configs/digits.py:mnist5k_to_uci \
      --workdir=runs/mnist5k_to_uci --config.classifier_dir=runs/mnist5k

Add `,runlocal` to the argument (e.g. `configs/digits.py:mnist5k,runlocal`) for a
seconds-long smoke run with a tiny model.
"""
import ml_collections

from configs import common

DIGITS_SHAPE = (28, 28, 1)

# Chosen on uci_digits validation data (README, "The scale of lam"): the highest
# validation accuracy with a validation PSNR of at least 23 dB. The paper's lam = 1
# suits 224x224x3 images; see dfm.losses.appearance_distance.
DIGITS_LAM = 0.01
DIGITS_LR = 0.3
DIGITS_LR_SCHEDULE = "cosine"


def classifier_training(dataset: str) -> ml_collections.ConfigDict:
  """``config.train`` of a digits classifier: Adam at lr 1e-3; 8 epochs on mnist5k,
  the paper's 20 on the smaller uci_digits."""
  train = common.classifier_training(dataset)
  train.lr = 1e-3
  if dataset == "mnist5k":
    train.epochs = 8
  return train


def data_finetuning(dataset: str) -> ml_collections.ConfigDict:
  """``config.dft`` for digits: the paper's schedule with the lam and lr chosen above."""
  dft = common.dft_schedule(dataset)
  dft.update(lam=DIGITS_LAM, lr=DIGITS_LR, lr_schedule=DIGITS_LR_SCHEDULE)
  return dft


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``mnist5k``: train the classifier; ``mnist5k_to_uci``: DFT with it on UCI digits."""
  arg = common.parse_arg(arg, name="", runlocal=False)
  config = common.run_defaults(ml_collections.ConfigDict())
  preset = "tiny" if arg.runlocal else "vgg6"
  config.model = common.model_config(preset, num_classes=10, input_shape=DIGITS_SHAPE)
  if arg.name == "mnist5k":
    config.train = classifier_training("mnist5k")
    if arg.runlocal:
      config.train.epochs = 1
  elif arg.name == "mnist5k_to_uci":
    config.classifier_dir = "runs/mnist5k"
    config.dft = data_finetuning("uci_digits")
    if arg.runlocal:
      config.dft.update(batch_size=256, updates_per_batch=2, epochs=1)
      config.checkpoint_every = 2
      config.log_every = 2
  else:
    raise common.unknown_name(arg.name, ("mnist5k", "mnist5k_to_uci"))
  config.lock()
  return config


def sweep(add) -> None:
  """The DFT points of ``--sweep``: lam x Adam lr around the demo's choice (lam 0.01,
  lr 0.3; README, "The scale of lam"), to choose on validation with a PSNR floor.

    python -m experiments.sweep --config=configs/digits.py:mnist5k_to_uci --sweep \
        --workdir=runs/sweep_digits --config.classifier_dir=runs/mnist5k
    python -m experiments.collect runs/sweep_digits --min_val_psnr=23
  """
  for lam in (0.003, 0.01, 0.03):
    for lr in (0.1, 0.3, 1.0):
      add({"dft.lam": lam, "dft.lr": lr})
