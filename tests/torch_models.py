"""A small PyTorch CNN exported to ONNX, with what PyTorch computes on it: the test of the
PyTorch route (``experiments.torch_to_onnx``'s) on layers the digits CNN does not have, a
strided grouped convolution, batch norm, average pooling, tanh and a linear head.

``tests/data/torch_cnn.onnx`` and ``torch_cnn_reference.npz`` (images, PyTorch's logits
and their class-3 input gradient) were written by this module with PyTorch 2.13 (the
``bench`` extra), so the tests check dfm's executor against PyTorch without installing
it; with PyTorch installed a test also exports afresh. To rewrite them::

  python -m tests.torch_models
"""
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
SHAPE = (16, 16, 3)  # (H, W, C) of the images; the model reads NCHW.
NUM_CLASSES, CLASS = 5, 3


def export_cnn(directory: Path) -> None:
  """Writes ``torch_cnn.onnx`` and ``torch_cnn_reference.npz`` into ``directory``."""
  import torch  # pylint: disable=import-outside-toplevel  (the bench extra)

  nn = torch.nn
  torch.manual_seed(0)
  model = nn.Sequential(
      nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
      nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Tanh(), nn.AvgPool2d(2),
      nn.Flatten(), nn.Linear(8 * 4 * 4, NUM_CLASSES))
  with torch.no_grad():  # Batch norm statistics other than 0 and 1.
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
  torch.onnx.export(model.eval(), (torch.zeros(1, 3, *SHAPE[:2]),),
                    str(directory / "torch_cnn.onnx"), input_names=["images"],
                    output_names=["logits"], opset_version=17,
                    dynamic_axes={"images": {0: "batch"}}, dynamo=False)
  images = np.random.default_rng(0).uniform(size=(3, *SHAPE)).astype(np.float32)
  tensor = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_(True)
  logits = model(tensor)
  logits[:, CLASS].sum().backward()
  np.savez(directory / "torch_cnn_reference.npz", images=images,
           logits=logits.detach().numpy(), grad=tensor.grad.permute(0, 2, 3, 1).numpy())


if __name__ == "__main__":
  DATA.mkdir(exist_ok=True)
  export_cnn(DATA)
  print(f"Wrote {DATA / 'torch_cnn.onnx'} and {DATA / 'torch_cnn_reference.npz'}.")
