"""The DFT step written plainly in PyTorch, as a user would without dfm.

Used only by ``experiments.benchmark`` (``pip install -e '.[bench]'``) to compare
speed on the same architecture, eager and under ``torch.compile``; never imported
by dfm itself.
"""
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def torch_vgg(blocks: Sequence[Sequence[int]], dense: Sequence[int], num_classes: int,
              input_shape: tuple[int, int, int]) -> nn.Module:
  """The same VGG as ``dfm.models.VGG`` (3x3 SAME convs + ReLU, 2x2 max-pool per block)."""
  height, width, channels = input_shape
  layers: list[nn.Module] = []
  for widths in blocks:
    for out in widths:
      layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
      channels = out
    layers.append(nn.MaxPool2d(2))
    height, width = height // 2, width // 2
  features = channels * height * width
  layers.append(nn.Flatten())
  for out in dense:
    layers += [nn.Linear(features, out), nn.ReLU()]
    features = out
  layers.append(nn.Linear(features, num_classes))
  return nn.Sequential(*layers)


def make_torch_dft_step(model: nn.Module, images: np.ndarray, labels: np.ndarray, *,
                        lam: float, lr: float, compiled: bool = False) -> Callable[[], None]:
  """One DFT update in place on its own noise (tanh transform, hinge + lam * appearance, Adam).

  ``loss = mean_k (1 - p_true,k) + lam * mean_k ||X_k - Z_k||^2`` with
  ``Z = 0.5 (tanh(atanh(2X - 1) + N) + 1)``; the model is frozen. With ``compiled``
  the step is ``torch.compile``-d and its first call compiles it from scratch
  (inductor's on-disk caches off, so that call's time is what a fresh machine pays).

  Example::

    step = make_torch_dft_step(torch_vgg(((8,),), (16,), 10, (28, 28, 1)), x, y,
                               lam=0.01, lr=1e-2)
    step()  # one update of the noise
  """
  model.eval()
  for parameter in model.parameters():
    parameter.requires_grad_(False)
  x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(np.array(labels)).long()
  noise = torch.zeros(x.shape[1:], requires_grad=True)
  optimizer = torch.optim.Adam([noise], lr=lr)
  centred = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))

  def step() -> None:
    optimizer.zero_grad()
    z = 0.5 * (torch.tanh(centred + noise) + 1)
    probs = model(z).softmax(-1)
    hinge = (1 - probs.gather(1, y[:, None])[:, 0]).clamp(min=0).mean()
    loss = hinge + lam * (z - x).square().flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()

  if not compiled:
    return step
  torch._inductor.config.force_disable_caches = True  # pylint: disable=protected-access
  return torch.compile(step)
