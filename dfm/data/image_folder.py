r"""A user's own images as a TFDS builder: class folders or a CSV, resized and converted.

`--manual_dir=DIR` is read in one of three layouts, tried in this order:

  DIR/labels.csv                 header `path,label[,split]`, paths relative to DIR
  DIR/train/<class>/a.png ...    split folders train/ validation/ (or val/) test/, kept
  DIR/<class>/a.png ...          class folders, the ImageNet/torchvision layout

Without split folders or a `split` column, each class is split 60/20/20 with the fixed
seed (`splits.stratified_split`); a split left with no example (tiny classes) is not
written. An image is a file ending `.png`, `.jpg`, `.jpeg` or `.bmp` (any case) anywhere
under a class folder; hidden files and folders (`.DS_Store`) are ignored, and so are
files beside the class folders (a README). Class names are
sorted (numerically when all are integers, so CSV labels 0..9 keep their numbers) and
become the names of the ClassLabel `label`, so reports show them.

Features: `image` uint8 `[size, size, channels]`, `label`, `file_name` (the path
relative to DIR). Configs `{size}px_{gray|rgb}` for every size in `IMAGE_SIZES`
(default `32px_rgb`): the centred square of each image (`faces.crop_square_rgb`) is
resized with Pillow bicubic, and converted to gray for `gray`.

A listed file that is not an image, absent or that Pillow cannot decode is skipped and
counted by reason in the metadata's `skipped` (`--summary` reports it); the run goes
on. An empty folder, a class without one readable image or a CSV without its columns
is a ValueError that names the problem and the fix.

Identity: prepared files live in `data_dir/image_folder/<config>/<version>`, so two
folders prepared under one `data_dir` would collide. Each prepared config records its
`source` (the folder's absolute path, its file count and a fingerprint of every file's
relative path, size and modification time) in its metadata; preparing any config from
files with another fingerprint into a `data_dir` that holds one is refused with a
ValueError naming both folders (`check_source`; `data.prepare` calls it before reusing
a prepared dataset; without `--manual_dir` it is reused as it is). One `data_dir` per
folder, then:

  python -m experiments.prepare --dataset=image_folder/32px_rgb --manual_dir=~/photos \
      --data_dir=data/photos --summary
"""

import abc
import csv
import dataclasses
import glob
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dfm.data import faces
from dfm.data.splits import SPLIT_FRACTIONS, stratified_split

IMAGE_SIZES = (25, 28, 32, 64, 96, 112, 224)  # faces.IMAGE_SIZES, 28 (digits) and 96.
CHANNELS = {"gray": 1, "rgb": 3}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
CSV_FILE = "labels.csv"
CSV_COLUMNS = ("path", "label")  # Required; `split` is optional.
SPLITS = tuple(SPLIT_FRACTIONS)  # train, validation, test.
SPLIT_ALIASES = {"val": "validation"}  # torchvision's ImageNet folder name.
SKIP_NOT_IMAGE = f"not a {'/'.join(IMAGE_EXTENSIONS)} file"
SKIP_ABSENT = faces.SKIP_ABSENT
SKIP_CORRUPT = faces.SKIP_CORRUPT
_LAYOUTS = (
    f"Expected DIR/<class>/*.png|jpg|jpeg|bmp (class folders), DIR/train|validation|test/"
    f"<class>/... (split folders) or DIR/{CSV_FILE} with header path,label[,split]."
)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One listed image: its path relative to DIR, its class name, its split if given."""

  path: str
  label: str
  split: str | None = None


@dataclasses.dataclass(eq=False, kw_only=True)
class ImageConfig(faces.FaceConfig):
  """A stored size and the number of channels: 1 (gray) or 3 (RGB)."""

  channels: int = 3


def image_configs() -> list[ImageConfig]:
  """Every size with gray and RGB, size-major: `25px_gray`, `25px_rgb`, `28px_gray`, ..."""
  return [
      ImageConfig(
          name=f"{size}px_{color}", size=size, channels=channels,
          description=f"{size}x{size} {color}: the centred square of each image, resized.",
      )
      for size in IMAGE_SIZES
      for color, channels in CHANNELS.items()
  ]


def square_pixels(image: Image.Image, size: int, channels: int) -> np.ndarray:
  """Returns the centred square of `image`, resized to uint8 `[size, size, channels]`.

  >>> square_pixels(Image.new("RGB", (40, 30), (255, 0, 0)), 28, 1).shape
  (28, 28, 1)
  """
  rgb = faces.crop_square_rgb(image, size)
  if channels == 3:
    return rgb
  return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]


def load_pixels(path: str, size: int, channels: int) -> np.ndarray:
  """Returns the image file at `path` as `square_pixels` gives it."""
  with Image.open(path) as image:
    return square_pixels(image, size, channels)


def skip_reason(path: str) -> str | None:
  """Returns why the file at `path` cannot be an example, or None if Pillow decodes it."""
  if not path.lower().endswith(IMAGE_EXTENSIONS):
    return SKIP_NOT_IMAGE
  if not os.path.isfile(path):
    return SKIP_ABSENT
  try:
    with Image.open(path) as image:
      image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
    return SKIP_CORRUPT  # Truncated or garbled files; Pillow raises SyntaxError for some PNGs.
  return None


def sorted_names(names: Iterable[str]) -> list[str]:
  """Returns the distinct class names sorted: numerically if all are integers.

  >>> sorted_names(["10", "2", "2"]), sorted_names(["dog", "cat"])
  (['2', '10'], ['cat', 'dog'])
  """
  names = set(names)
  if all(name.lstrip("-").isdigit() for name in names):
    return sorted(names, key=int)
  return sorted(names)


def parse_split(value: str, where: str) -> str:
  """Returns the split `value` names (`val` is validation); ValueError naming `where` if none.

  >>> parse_split("val", "x")
  'validation'
  """
  split = SPLIT_ALIASES.get(value, value)
  if split not in SPLITS:
    raise ValueError(f"{where}: unknown split {value!r}; use one of {list(SPLITS)}.")
  return split


def split_indices(labels: np.ndarray, given: list[str | None]) -> dict[str, np.ndarray]:
  """Returns each split's example indices: as `given` if any is, else 60/20/20 per class.

  A split with no example (none given, or classes too small) is left out: TFDS
  cannot write an empty split.

  >>> {k: v.tolist() for k, v in split_indices(np.zeros(2), ["test", "train"]).items()}
  {'train': [1], 'test': [0]}
  """
  if all(split is None for split in given):
    parts = stratified_split(labels)
  else:
    parts = {split: np.flatnonzero(np.array(given) == split) for split in SPLITS}
  return {split: indices for split, indices in parts.items() if len(indices)}


def list_files(path: str) -> list[str]:
  """Returns every file under the folder `path`, relative to it, sorted; hidden ones left out.

  A file `path` gives its own name.
  """
  if not os.path.isdir(path):
    return [os.path.basename(path)]
  found = []
  for folder, subfolders, files in os.walk(path):
    subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    relative = os.path.relpath(folder, path)
    found += [os.path.normpath(os.path.join(relative, f)) for f in files if not f.startswith(".")]
  return sorted(found)


def fingerprint(path: str) -> dict:
  """Returns a file or folder's identity: `{"path", "files", "fingerprint"}`.

  The fingerprint hashes each file's relative path, size and modification time (what
  rsync compares), so it is cheap; a folder moved with its times kept keeps it.
  """
  path = os.path.abspath(path)
  root = path if os.path.isdir(path) else os.path.dirname(path)
  digest = hashlib.sha256()
  files = list_files(path)
  for name in files:
    stat = os.stat(os.path.join(root, name))
    digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return {"path": path, "files": len(files), "fingerprint": digest.hexdigest()[:16]}


class UserImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What `ImageFolder` and `Npz` share: configs, features and the source's identity.

  A subclass resolves `manual_dir` to its source (`_source_path`) and writes the
  examples; `_start` checks and records the source, `_set_class_names` the names.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DEFAULT_BUILDER_CONFIG_NAME = "32px_rgb"
  EXTRA_FEATURES: dict = {}  # Beside `image` and `label`.

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict({
            "image": faces.image_feature(config.size, config.channels),
            "label": tfds.features.ClassLabel(),  # Names set when prepared, saved with it.
            **self.EXTRA_FEATURES,
        }),
        supervised_keys=("image", "label"),
        metadata=faces.skipped_metadata(),
    )

  @abc.abstractmethod
  def _source_path(self, manual_dir: str) -> str:
    """Returns the file or folder that `manual_dir` names; FileNotFoundError if none."""

  def check_source(self, manual_dir: str) -> dict:
    """Returns the source's `fingerprint`; ValueError if this data_dir holds other files'.

    Every prepared config of this builder under `data_dir` must come from files with
    the same fingerprint: a data_dir holds one user dataset per builder.
    """
    source = fingerprint(self._source_path(os.path.expanduser(os.fspath(manual_dir))))
    root = os.fspath(self.data_dir_root)
    if os.path.commonpath([root, source["path"]]) == source["path"]:
      raise ValueError(
          f"--data_dir {root} is inside the source {source['path']}: its files would become"
          " part of the dataset. Pass a --data_dir outside it."
      )
    for config_dir, recorded in self._prepared_sources():
      if recorded.get("fingerprint") != source["fingerprint"]:
        raise ValueError(self._other_source_message(config_dir, recorded, source))
    return source

  def _prepared_sources(self) -> Iterator[tuple[str, dict]]:
    """Yields (folder, recorded source) of every prepared config of this builder."""
    pattern = os.path.join(os.fspath(self.data_dir_root), self.name, "*", str(self.version))
    for config_dir in sorted(glob.glob(pattern)):
      metadata_file = os.path.join(config_dir, "metadata.json")
      if os.path.isfile(metadata_file):
        with open(metadata_file) as f:
          yield config_dir, json.load(f).get("source", {})

  def _other_source_message(self, config_dir: str, recorded: dict, source: dict) -> str:
    changed = " (it changed since)" if recorded.get("path") == source["path"] else ""
    return (
        f"{config_dir} was prepared from {recorded.get('path')} ({recorded.get('files')}"
        f" files, fingerprint {recorded.get('fingerprint')}), not from {source['path']}"
        f" ({source['files']} files, fingerprint {source['fingerprint']}){changed}."
        f" A data_dir holds one {self.name} dataset: prepare this one into its own"
        f" --data_dir (e.g. --data_dir=data/{os.path.basename(source['path'])}), or delete"
        f" {os.path.dirname(os.path.dirname(config_dir))} to replace the old one."
    )

  def _start(self, dl_manager: tfds.download.DownloadManager) -> str:
    """Checks the source of `manual_dir`, records it in the metadata; returns its path."""
    # TFDS defaults a missing manual_dir to <data_dir>/downloads/manual: _source_path checks.
    source = self.check_source(dl_manager._manual_dir)  # pylint: disable=protected-access
    self.info.metadata["source"] = source
    return source["path"]

  def _set_class_names(self, names: list[str]) -> None:
    self.info.features["label"].names = names


class ImageFolder(UserImages):
  """A user's folder of images, labelled by class folders or a CSV; see the module doc."""

  BUILDER_CONFIGS = image_configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUTS
  EXTRA_FEATURES = {"file_name": tfds.features.Text()}

  def _source_path(self, manual_dir: str) -> str:
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(
          f"Image folder {manual_dir} does not exist: pass --manual_dir=YOUR_FOLDER. {_LAYOUTS}"
      )
    return manual_dir

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    root = self._start(dl_manager)
    names, entries = list_entries(root)
    kept = []
    for entry, skipped in faces.load_in_chunks(entries, lambda e: skip_reason(_join(root, e))):
      if skipped:
        faces.count_skipped(self.info.metadata, skipped)
      else:
        kept.append(entry)
    if not kept:
      reasons = ", ".join(f"{count} {reason}" for reason, count in
                          sorted(self.info.metadata["skipped"].items()))
      raise ValueError(f"0 of {len(entries)} images in {root} could be read ({reasons}). "
                       "Check that the files are images Pillow can open (.png, .jpg, .bmp).")
    check_every_class_kept(names, entries, kept, root)
    self._set_class_names(names)
    label_of = {name: label for label, name in enumerate(names)}
    labels = np.array([label_of[entry.label] for entry in kept])
    parts = split_indices(labels, [entry.split for entry in kept])
    return {
        split: self._generate_examples(root, [kept[i] for i in indices], label_of)
        for split, indices in parts.items()
    }

  def _generate_examples(
      self, root: str, entries: list[Entry], label_of: dict[str, int]
  ) -> Iterator[tuple[str, dict]]:
    """Yields (path relative to the folder, example), decoding in chunks on all cores."""
    config = self.builder_config
    load = lambda entry: load_pixels(_join(root, entry), config.size, config.channels)
    for entry, pixels in faces.load_in_chunks(entries, load):
      yield entry.path, {
          "image": pixels, "label": label_of[entry.label], "file_name": entry.path,
      }


def _join(root: str, entry: Entry) -> str:
  return os.path.join(root, entry.path)


def list_entries(root: str) -> tuple[list[str], list[Entry]]:
  """Returns the class names and the images of the folder `root`, in the first layout
  it has (module doc). Class names are sorted (`sorted_names`); an empty class folder
  is a class with no image."""
  if os.path.isfile(os.path.join(root, CSV_FILE)):
    entries = read_csv(os.path.join(root, CSV_FILE))
    return sorted_names(entry.label for entry in entries), entries
  folders = _subfolders(root)
  if not folders:
    what = "holds files but no class folders" if list_files(root) else "is empty"
    raise ValueError(f"Image folder {root} {what}. {_LAYOUTS}")
  split_folders = [name for name in folders if SPLIT_ALIASES.get(name, name) in SPLITS]
  if not split_folders:
    return _class_entries(root, "", None)
  if len(split_folders) < len(folders):
    others = sorted(set(folders) - set(split_folders))
    raise ValueError(
        f"Image folder {root} mixes split folders {split_folders} with other folders"
        f" {others}: move every class folder into train/, validation/ or test/, or"
        " remove the split folders. " + _LAYOUTS
    )
  names, entries = set(), []
  for name in split_folders:
    split = parse_split(name, os.path.join(root, name))
    split_names, split_entries = _class_entries(root, name, split)
    names.update(split_names)
    entries += split_entries
  return sorted_names(names), entries


def _subfolders(path: str) -> list[str]:
  return sorted(
      name for name in os.listdir(path)
      if not name.startswith(".") and os.path.isdir(os.path.join(path, name))
  )


def _class_entries(root: str, under: str, split: str | None) -> tuple[list[str], list[Entry]]:
  """Returns the class folders of `root/under` and every file in them (ValueError if none)."""
  names = _subfolders(os.path.join(root, under))
  if not names:
    raise ValueError(f"{os.path.join(root, under)} has no class folders. {_LAYOUTS}")
  entries = [
      Entry(os.path.join(under, name, f), label=name, split=split)
      for name in names
      for f in list_files(os.path.join(root, under, name))
  ]
  return sorted_names(names), entries


def read_csv(path: str) -> list[Entry]:
  """Returns the rows of a `path,label[,split]` CSV; ValueError naming a bad column or row."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in CSV_COLUMNS if name not in columns]
    if missing:
      raise ValueError(
          f"{path} has no {' or '.join(missing)} column (header: {','.join(columns)}): its"
          " first line must be path,label or path,label,split, with paths relative to its"
          " folder."
      )
    reader.fieldnames = columns
    rows = [(line, row) for line, row in enumerate(reader, start=2)]
  entries, seen = [], set()
  for line, row in rows:
    values = {key: (row.get(key) or "").strip() for key in (*CSV_COLUMNS, "split")}
    where = f"{path} line {line}"
    if not values["path"] or not values["label"]:
      raise ValueError(f"{where}: empty path or label; every row needs both.")
    image_path = os.path.normpath(values["path"])
    if image_path in seen:
      raise ValueError(f"{where}: {image_path} is listed twice; list each image once.")
    seen.add(image_path)
    split = parse_split(values["split"], where) if "split" in columns else None
    entries.append(Entry(image_path, label=values["label"], split=split))
  if not entries:
    raise ValueError(f"{path} lists no image: add rows path,label[,split] under its header.")
  return entries


def check_every_class_kept(
    names: list[str], entries: list[Entry], kept: list[Entry], root: str
) -> None:
  """ValueError naming each class of `names` with no image among `kept` (of `entries`)."""
  kept_names = {entry.label for entry in kept}
  empty = [name for name in names if name not in kept_names]
  if empty:
    listed = {name: sum(entry.label == name for entry in entries) for name in empty}
    raise ValueError(
        f"No readable image in class(es) {empty} of {root} (files listed per class, all"
        f" skipped: {listed}). Add .png/.jpg/.jpeg/.bmp images to each, or remove the class."
    )
