r"""Images and labels in one NumPy `.npz` file as a TFDS builder, stored like `image_folder`.

`--manual_dir` is the `.npz` file itself, or a folder that holds exactly one. Arrays:

  image        [N, H, W, C], C 1 (gray) or 3 (RGB): uint8 0..255 or float in [0, 1]
  label        [N] integers >= 0
  split        optional [N] strings train/validation/test (`val` too), kept as given;
               without it each class is split 60/20/20 with the fixed seed
  class_names  optional [K] distinct strings, K > max(label); else "0", "1", ...

Strings must be NumPy strings (`np.savez` stores a list of str so); object arrays are
refused, since loading them needs pickle. A bad shape, dtype, range or length is a
ValueError that names the array and the fix.

Features: `image` uint8 `[size, size, channels]`, `label` (a ClassLabel with the class
names), `index` (the row in the file). The configs (`{size}px_{gray|rgb}`, default
`32px_rgb`), the resizing (centred square, Pillow bicubic) and the identity check (one
source per `data_dir`, `UserImages.check_source`) are `image_folder`'s:

  np.savez("digits.npz", image=x, label=y, class_names=np.array(names))
  python -m experiments.prepare --dataset=npz/28px_gray --manual_dir=digits.npz \
      --data_dir=data/digits --summary
"""

import os
import zipfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dfm.data import image_folder

EXTENSION = ".npz"
ARRAYS_HINT = "np.savez(path, image=[N, H, W, C], label=[N], split=[N], class_names=[K])"


def load_arrays(path: str) -> dict:
  """Returns the checked arrays of the `.npz` file at `path`.

  `image` as stored, `label` int64, `split` a list of split names (None each when
  absent), `class_names` a list of str. Raises ValueError naming the bad array.
  """
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise ValueError(
        f"{path} is not a readable .npz file ({error}); write it with {ARRAYS_HINT}."
    ) from error
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} holds one array, not an .npz archive; write it with {ARRAYS_HINT}.")
  with npz:
    try:
      arrays = {name: npz[name] for name in npz.files}
    except ValueError as error:  # An object array: loading it needs pickle.
      raise ValueError(
          f"{path}: {error}. Store split and class_names as NumPy strings"
          " (np.array(names, dtype=str)), not objects."
      ) from error
  for name in ("image", "label"):
    if name not in arrays:
      raise ValueError(
          f"{path} has no {name!r} array (it has {sorted(arrays)}); write it with {ARRAYS_HINT}."
      )
  image, label = check_image(arrays["image"], path), check_label(arrays["label"], path)
  if len(label) != len(image):
    raise ValueError(
        f"{path}: label has {len(label)} entries but image has {len(image)} images; give"
        " one label per image."
    )
  return {
      "image": image,
      "label": label,
      "split": check_split(arrays.get("split"), len(image), path),
      "class_names": check_class_names(arrays.get("class_names"), label, path),
  }


def check_image(image: np.ndarray, path: str) -> np.ndarray:
  """Returns `image` if `[N, H, W, 1 or 3]`, uint8 or float in [0, 1]; else ValueError."""
  if image.ndim != 4 or image.shape[-1] not in (1, 3) or not image.size:
    raise ValueError(
        f"{path}: image has shape {image.shape}; it must be [N, H, W, C] with N, H, W > 0"
        " and C 1 (gray) or 3 (RGB). Add the channel axis of gray images: image[..., None]."
    )
  if np.issubdtype(image.dtype, np.floating):
    low, high = float(np.min(image)), float(np.max(image))
    if not (np.isfinite(image).all() and 0 <= low and high <= 1):
      raise ValueError(
          f"{path}: float image has values in [{low}, {high}]; floats must lie in [0, 1]."
          " Divide 0..255 pixels by 255, or store them as uint8."
      )
  elif image.dtype != np.uint8:
    raise ValueError(
        f"{path}: image has dtype {image.dtype}; store uint8 (0..255, image.astype(np.uint8)"
        " if the values are 0..255) or float in [0, 1]."
    )
  return image


def check_label(label: np.ndarray, path: str) -> np.ndarray:
  """Returns `label` as int64 if `[N]` integers >= 0; else ValueError."""
  if label.ndim != 1:
    raise ValueError(f"{path}: label has shape {label.shape}; it must be [N], one per image.")
  if not np.issubdtype(label.dtype, np.integer):
    raise ValueError(
        f"{path}: label has dtype {label.dtype}; labels must be integer class numbers"
        " (label.astype(np.int64) if they are whole numbers)."
    )
  if len(label) and label.min() < 0:
    raise ValueError(f"{path}: label holds {label.min()}; class numbers start at 0.")
  return label.astype(np.int64)


def _strings(array: np.ndarray, name: str, path: str) -> list[str]:
  """Returns a 1-D NumPy string array as a list of str; else ValueError naming it."""
  if array.ndim != 1 or array.dtype.kind not in "US":
    raise ValueError(
        f"{path}: {name} has shape {array.shape} and dtype {array.dtype}; it must be a 1-D"
        f" array of strings (np.array({name}, dtype=str))."
    )
  return [value.decode() if isinstance(value, bytes) else str(value) for value in array.tolist()]


def check_split(split: np.ndarray | None, num_images: int, path: str) -> list[str | None]:
  """Returns each image's split name (None each if `split` is absent); else ValueError."""
  if split is None:
    return [None] * num_images
  values = _strings(split, "split", path)
  if len(values) != num_images:
    raise ValueError(
        f"{path}: split has {len(values)} entries but image has {num_images} images; give"
        " one split per image, or leave split out for 60/20/20 per class."
    )
  names = {value: image_folder.parse_split(value, f"{path} array split") for value in set(values)}
  return [names[value] for value in values]


def check_class_names(names: np.ndarray | None, label: np.ndarray, path: str) -> list[str]:
  """Returns the class names: as given if distinct and enough, else "0".."max(label)"."""
  num_classes = int(label.max()) + 1
  if names is None:
    return [str(i) for i in range(num_classes)]
  names = _strings(names, "class_names", path)
  if len(set(names)) != len(names) or len(names) < num_classes:
    raise ValueError(
        f"{path}: class_names has {len(names)} names ({len(set(names))} distinct) but label"
        f" goes up to {num_classes - 1}; give one distinct name per class 0..{num_classes - 1}."
    )
  return names


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  """Returns uint8 pixels as they are and float pixels in [0, 1] scaled to 0..255, rounded.

  >>> to_uint8(np.array([0.0, 0.5, 1.0])).tolist()
  [0, 128, 255]
  """
  if pixels.dtype == np.uint8:
    return pixels
  return np.round(pixels * 255).astype(np.uint8)


class Npz(image_folder.UserImages):
  """Images and integer labels in one `.npz` file; see the module doc."""

  BUILDER_CONFIGS = image_folder.image_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"--manual_dir: a .npz file, or a folder with one: {ARRAYS_HINT}."
  EXTRA_FEATURES = {"index": np.int64}

  def _source_path(self, manual_dir: str) -> str:
    if os.path.isfile(manual_dir):
      return manual_dir
    found = []
    if os.path.isdir(manual_dir):
      found = sorted(n for n in os.listdir(manual_dir) if n.lower().endswith(EXTENSION))
    if len(found) != 1:
      where = f"{manual_dir} holds {found}" if found else f"no {EXTENSION} file at {manual_dir}"
      raise FileNotFoundError(
          f"Expected one {EXTENSION} file, but {where}: pass --manual_dir=FILE{EXTENSION}."
      )
    return os.path.join(manual_dir, found[0])

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    arrays = load_arrays(self._start(dl_manager))
    self._set_class_names(arrays["class_names"])
    parts = image_folder.split_indices(arrays["label"], arrays["split"])
    return {split: self._generate_examples(arrays, indices) for split, indices in parts.items()}

  def _generate_examples(self, arrays: dict, indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    """Yields (row in the file, example), resized and converted as the config says."""
    config = self.builder_config
    for i in indices:
      pixels = to_uint8(arrays["image"][i])
      image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
      yield int(i), {
          "image": image_folder.square_pixels(image, config.size, config.channels),
          "label": int(arrays["label"][i]),
          "index": int(i),
      }
