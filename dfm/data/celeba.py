r"""CelebA (Liu et al., 2015) read as published, as a TFDS builder: 40 binary attributes.

The publisher (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive folders
`Img`, `Anno`, `Eval`) ships the files that `manual_dir` must hold, unchanged:

  <manual_dir>/img_align_celeba/000001.jpg ... 202599.jpg   (Img/img_align_celeba.zip, unzipped)
  <manual_dir>/list_attr_celeba.txt                          (Anno/)
  <manual_dir>/list_eval_partition.txt                       (Eval/)

`list_attr_celeba.txt`: a count line, a line of the 40 attribute names, then one row
per image, `000001.jpg` and forty `1`/`-1` values separated by one or more spaces.
`list_eval_partition.txt`: rows `000001.jpg 0`, the standard partition (0 train,
1 validation, 2 test: 162,770 / 19,867 / 19,962). CRLF line endings are accepted.

Features: `image` uint8 `[size, size, 3]` (the aligned 178x218 face, its centred
178x178 square resized with Pillow bicubic, stored as raw bytes), one ClassLabel per
attribute under its published name (`Male`, `Smiling`, ...; -1 -> 0 "no", 1 -> 1
"yes"), and `label`, the config's attribute again: what the pipeline reads.

Configs `{size}px_{attribute}` (lower case), e.g. `64px_smiling`, for every size in
`faces.IMAGE_SIZES` and all 40 attributes (`config_name` builds and checks one); the
default is `64px_male`. The attribute is in the config because the pipeline reads
`image` and `label` only, so each prepared attribute stores its own copy of the
images (about 2.5 GB at 64px); all 40 attributes are stored in every config, so the
summary counts them all and one prepared config serves any attribute once the
pipeline can take the label from another feature.

An image listed but absent, or one Pillow cannot decode, is skipped with a warning
and counted by reason in the metadata's `skipped` (see `faces.skipped_metadata`).
Images are decoded by a thread pool (all cores; Pillow frees the GIL) in chunks of
`faces.CHUNK_SIZE`, the attribute file is streamed and only the partition (file name ->
split) is held, so memory stays flat in the dataset's size: about 350 MB for 10,000
faces at 64px, plus TFDS's shuffle buffer, which spills to disk past 1 GB. On two
cores this prepares about 450 faces/s (7 to 8 minutes for all of CelebA at 64px):

  python -m experiments.prepare --dataset=celeba/64px_smiling --manual_dir=~/celeba \
      --data_dir=data
"""

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from dfm.data import faces

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # As in the header of list_attr_celeba.txt, in its order.
PAPER_ATTRIBUTES = (
    "Male", "Smiling", "Attractive", "Wearing_Lipstick", "Bushy_Eyebrows", "Pale_Skin"
)
IMAGES_DIR = "img_align_celeba"
ATTRIBUTES_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
PARTITIONS = {"0": "train", "1": "validation", "2": "test"}
SKIP_MISSING = faces.SKIP_ABSENT
SKIP_CORRUPT = faces.SKIP_CORRUPT

_LAYOUT = (
    "Expected CelebA as published: {root}/img_align_celeba/000001.jpg (Img/img_align_celeba.zip"
    " unzipped), {root}/list_attr_celeba.txt (from Anno/) and {root}/list_eval_partition.txt"
    " (from Eval/); see https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html."
)


def config_name(size: int, attribute: str) -> str:
  """Returns the config name of `attribute` (as published) at `size`; checks both.

  Raises ValueError listing the valid sizes or attribute names.

  >>> config_name(64, "Wearing_Lipstick")
  '64px_wearing_lipstick'
  """
  if attribute not in ATTRIBUTES:
    raise ValueError(
        f"Unknown CelebA attribute {attribute!r}; valid attributes: {list(ATTRIBUTES)}."
    )
  if size not in faces.IMAGE_SIZES:
    raise ValueError(f"Unknown size {size}; valid sizes: {list(faces.IMAGE_SIZES)}.")
  return f"{size}px_{attribute.lower()}"


def check_manual_dir(root: epath.PathLike) -> epath.Path:
  """Returns `root` as a Path if it holds CelebA's published layout, else says what is wrong.

  Raises FileNotFoundError naming the missing folder or file, the expected layout
  with example paths, and a hint when the folder looks like a common mistake (the
  image folder itself, a parent folder, the zip not unzipped, the Drive's `Anno/`).
  """
  root = epath.Path(root).expanduser()
  layout = _LAYOUT.format(root=root)
  if not root.is_dir():
    raise FileNotFoundError(f"CelebA's manual_dir {root} does not exist. {layout}")
  if not (root / IMAGES_DIR).is_dir():
    hint = ""
    if (root / f"{IMAGES_DIR}.zip").exists():
      hint = f" Unzip {root / IMAGES_DIR}.zip there (it extracts to {IMAGES_DIR}/)."
    elif root.name == IMAGES_DIR or (root / "000001.jpg").exists():
      hint = f" {root} looks like the image folder itself: pass its parent as manual_dir."
    elif nested := sorted(p.parent for p in root.glob(f"*/{IMAGES_DIR}")):
      hint = f" Did you mean manual_dir={nested[0]}?"
    raise FileNotFoundError(
        f"{root} is not CelebA's folder: it has no {IMAGES_DIR}/.{hint} {layout}"
    )
  for name, folder in ((ATTRIBUTES_FILE, "Anno"), (PARTITION_FILE, "Eval")):
    if not (root / name).is_file():
      moved = (root / folder / name).exists()
      hint = f" Move {root / folder / name} up into {root}." if moved else ""
      raise FileNotFoundError(
          f"CelebA's annotation file {root / name} is missing (the publisher has it in its"
          f" {folder}/ folder).{hint} {layout}"
      )
  return root


def _lines(path: epath.Path) -> Iterator[tuple[int, str]]:
  """Yields (line number from 1, line without its LF or CRLF end) of a text file, streamed."""
  with open(os.fspath(path), encoding="utf-8") as file:  # Universal newlines: LF or CRLF.
    for number, line in enumerate(file, start=1):
      yield number, line.rstrip("\r\n")


def read_partition(path: epath.PathLike) -> dict[str, str]:
  """Returns `{image file name: split}` from `list_eval_partition.txt` (`name 0|1|2`).

  Raises ValueError naming the line that does not parse.
  """
  path = epath.Path(path)
  partition = {}
  for number, line in _lines(path):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) != 2 or fields[1] not in PARTITIONS:
      raise ValueError(
          f"{path} line {number} is {line!r}; expected an image name and 0 (train),"
          " 1 (validation) or 2 (test), e.g. '000001.jpg 0'."
      )
    partition[fields[0]] = PARTITIONS[fields[1]]
  return partition


def read_attributes(path: epath.PathLike) -> Iterator[tuple[str, dict[str, int]]]:
  """Yields (image file name, {attribute: 0 or 1}) per row of `list_attr_celeba.txt`, streamed.

  Checks the header (a count line, then the names, which must include all of
  `ATTRIBUTES`; others are ignored), that every row has one `1`/`-1` value per name
  (-1 -> 0), and, once all rows are read, that their number is the count: a
  truncated download is an error.
  Raises ValueError naming the line and what was expected.
  """
  path = epath.Path(path)
  lines = _lines(path)
  (_, count), (_, header) = next(lines, (1, "")), next(lines, (2, ""))
  names = header.split()
  if not count.strip().isdigit() or set(ATTRIBUTES) - set(names):
    raise ValueError(
        f"{path} does not start with CelebA's header: a count line (e.g. '202599'), then the"
        f" 40 attribute names {list(ATTRIBUTES)}; it starts with {count!r}, {header!r}."
    )
  num_rows = 0
  for number, line in lines:
    if not line.strip():
      continue
    image, *values = line.split()
    if len(values) != len(names) or set(values) - {"1", "-1"}:
      raise ValueError(
          f"{path} line {number}: expected an image name and {len(names)} values 1 or -1,"
          f" got {line[:80]!r}."
      )
    num_rows += 1
    row = dict(zip(names, values))
    yield image, {name: int(row[name] == "1") for name in ATTRIBUTES}
  if num_rows != int(count):
    raise ValueError(
        f"{path} says it has {int(count)} rows but has {num_rows}: a truncated download?"
        " Download it again."
    )


def load_face(path: epath.PathLike, size: int) -> tuple[np.ndarray | None, str | None]:
  """Returns (uint8 `[size, size, 3]` crop, None), or (None, why it was skipped).

  Why: `SKIP_MISSING` if there is no such file, `SKIP_CORRUPT` if Pillow cannot decode it.
  """
  try:
    with Image.open(os.fspath(path)) as image:
      return faces.crop_square_rgb(image, size), None
  except FileNotFoundError:
    return None, SKIP_MISSING
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
    return None, SKIP_CORRUPT


@dataclasses.dataclass(eq=False, kw_only=True)
class CelebaConfig(faces.FaceConfig):
  """A stored size and the published name of the attribute that is `label`."""

  attribute: str = "Male"


def _configs() -> list[CelebaConfig]:
  """Every size with every attribute, size-major."""
  return [
      CelebaConfig(
          name=config_name(size, attribute), size=size, attribute=attribute,
          description=f"{size}x{size} RGB crops; label {attribute}.",
      )
      for size in faces.IMAGE_SIZES
      for attribute in ATTRIBUTES
  ]


class Celeba(tfds.core.GeneratorBasedBuilder):
  """CelebA's aligned faces from `manual_dir`, 40 binary attributes, the standard partition."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_BUILDER_CONFIG_NAME = config_name(64, "Male")
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(root="<manual_dir>")

  def _info(self) -> tfds.core.DatasetInfo:
    size, attribute = self.builder_config.size, self.builder_config.attribute
    yes_no = {name: tfds.features.ClassLabel(names=["no", "yes"]) for name in ATTRIBUTES}
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": faces.image_feature(size, 3),
            "label": tfds.features.ClassLabel(names=[f"not_{attribute}", attribute]),
            **yes_no,
        }),
        supervised_keys=("image", "label"),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        metadata=faces.skipped_metadata(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    # TFDS defaults a missing manual_dir to <data_dir>/downloads/manual: check it ourselves.
    root = check_manual_dir(dl_manager._manual_dir)  # pylint: disable=protected-access
    partition = read_partition(root / PARTITION_FILE)
    return {
        split: self._generate_examples(root, partition, split)
        for split in PARTITIONS.values()
    }

  def _generate_examples(
      self, root: epath.Path, partition: dict[str, str], split: str
  ) -> Iterator[tuple[str, dict]]:
    """Yields (image file name, example) for the rows of `split`, decoding in chunks."""
    size, attribute = self.builder_config.size, self.builder_config.attribute
    rows = self._rows_of(root, partition, split)
    load = lambda row: load_face(root / IMAGES_DIR / row[0], size)
    for (name, labels), (image, skipped) in faces.load_in_chunks(rows, load):
      if skipped:
        logging.warning("CelebA: skipped %s (%s).", root / IMAGES_DIR / name, skipped)
        faces.count_skipped(self.info.metadata, skipped)
        continue
      yield name, {"image": image, "label": labels[attribute], **labels}

  def _rows_of(
      self, root: epath.Path, partition: dict[str, str], split: str
  ) -> Iterator[tuple[str, dict[str, int]]]:
    """Yields the attribute rows of `split`; an image missing from the partition is an error."""
    for name, labels in read_attributes(root / ATTRIBUTES_FILE):
      if name not in partition:
        raise ValueError(
            f"{root / ATTRIBUTES_FILE} lists {name} but {root / PARTITION_FILE} does not:"
            " are both files from the same CelebA release?"
        )
      if partition[name] == split:
        yield name, labels
