"""The DFT step written plainly in PyTorch (eager), as a user would without dfm.

Used only by ``experiments.benchmark`` (``pip install -e '.[bench]'``) to compare
speed on the same architecture; never imported by dfm itself.
"""
import time
from collections.abc import Sequence

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


def time_torch_dft_step(model: nn.Module, images: np.ndarray, labels: np.ndarray, *,
                        lam: float, lr: float, repeats: int) -> float:
  """Median ms of one DFT update (tanh transform, hinge + lam * appearance, Adam)."""
  model.eval()
  for parameter in model.parameters():
    parameter.requires_grad_(False)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels).long()
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

  step()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))
