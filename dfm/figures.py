"""Images written next to a run's results."""
from pathlib import Path

import numpy as np
from PIL import Image


def save_noise_png(noise: np.ndarray, path: Path, *, scale: int = 8) -> None:
  """Writes the noise as a PNG: grey = 0, white/black = +-max|noise|, upscaled.

  Example::

    save_noise_png(np.zeros((28, 28, 1)), Path("noise.png"))
  """
  noise = np.asarray(noise, np.float32)
  peak = float(np.abs(noise).max()) or 1.0
  pixels = np.round(255 * (0.5 + 0.5 * noise / peak)).astype(np.uint8)
  if pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  image = Image.fromarray(pixels)
  image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)
