"""Labeled Faces in the Wild, read as published, with Kumar et al.'s attributes, as a TFDS builder.

Files in `manual_dir` (read only, never modified), as the publishers ship them:

  MANUAL_DIR/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg   (lfw.tgz: 250x250 RGB JPEGs)
  MANUAL_DIR/lfw_attributes.txt                          (Kumar et al., 2009)

The deep-funneled archive (lfw-deepfunneled.tgz) has the same layout under
`lfw-deepfunneled/` instead of `lfw/`: `manual_dir` may hold either one, not both.
`lfw_attributes.txt` is a comment line (`# 2`), a tab-separated header `#`, `person`,
`imagenum` and 73 attribute names (`Male`, `Smiling`, `Bushy Eyebrows`, ...), then one
tab-separated row per image: the person's name with spaces (`Aaron Eckhart`, on disk
`Aaron_Eckhart`), the image number (1 -> `_0001.jpg`) and 73 real-valued intensities.
Each is binarised as in the paper: intensity > 0 -> 1, else 0.

Configs `{size}px_{attribute}_{protocol}`, e.g. `64px_male_random`, `112px_smiling_identity`:
- `size`: the stored side (`faces.IMAGE_SIZES`). Each image is center-cropped to its
  central half (`CROP_FRACTION`: the central 125x125 of the published 250x250, the face
  from the brows to the chin, little background), then resized with Pillow bicubic to
  `[size, size, 3]` uint8 RGB.
- `attribute`: the one that is `label` (the paper's: Male, Smiling, Bushy Eyebrows, Pale
  Skin, Wearing Lipstick). All 73 binarised attributes are stored as well, as `attributes` (uint8 `[73]`, in
  header order, names in the metadata), so any can be read back without re-preparing.
- `protocol`: `random` is the paper's 60/20/20 split per class of `label`, seeded
  (`splits.stratified_split`); `identity` puts every person in exactly one split
  (scikit-learn `StratifiedGroupKFold`, 5 folds seeded: fold 0 test, fold 1 validation,
  the rest train), stratified by `label` as far as whole persons allow. Identity leakage
  (the same person in train and test) inflates accuracy; prefer `identity` to compare.

Builder metadata: `skipped` (`{reason: count}`: an image listed but absent, a corrupt
JPEG, a duplicate row; the run goes on), `protocol`, `attribute`, `attribute_names`.

  python -m experiments.prepare --dataset=lfw/64px_male_identity --manual_dir=~/lfw_files \
      --data_dir=data
"""

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dfm.data import faces
from dfm.data import splits
from dfm.data.splits import SPLIT_SEED
from dfm.data.splits import stratified_split

ATTRIBUTES_FILE = "lfw_attributes.txt"
IMAGE_FOLDERS = ("lfw", "lfw-deepfunneled")  # Plain and deep-funneled archives.
# The paper's LFW attributes (Tables 3 and 6; its "Attractive" has no LFW counterpart: LFW
# rates "Attractive Man" and "Attractive Woman" instead).
PAPER_ATTRIBUTES = ("Male", "Smiling", "Bushy Eyebrows", "Pale Skin", "Wearing Lipstick")
PROTOCOLS = ("random", "identity")
CROP_FRACTION = 0.5  # Central half of each side: 125x125 of the published 250x250.
IDENTITY_FOLDS = 5  # Identity protocol: fold 0 test, fold 1 validation, 2-4 train (60/20/20).
_EXAMPLE_PATH = "lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
_EXPECTED_LAYOUT = (
    f"Expected MANUAL_DIR/{_EXAMPLE_PATH} (or lfw-deepfunneled/... from the deep-funneled"
    f" archive) and MANUAL_DIR/{ATTRIBUTES_FILE}."
)
SKIP_ABSENT = faces.SKIP_ABSENT
SKIP_CORRUPT = faces.SKIP_CORRUPT
SKIP_DUPLICATE = "duplicate row"


@dataclasses.dataclass(frozen=True)
class AttributeRow:
  """One row of `lfw_attributes.txt`: a person's image and its 73 binarised attributes."""

  person: str  # As on disk: spaces replaced by underscores, e.g. "Aaron_Eckhart".
  imagenum: int  # 1 -> `<person>_0001.jpg`.
  attributes: np.ndarray  # uint8 [num attributes], 1 where the intensity is > 0.

  @property
  def relative_path(self) -> str:
    """The image path under the image folder, e.g. `Aaron_Eckhart/Aaron_Eckhart_0001.jpg`."""
    return f"{self.person}/{self.person}_{self.imagenum:04d}.jpg"


def slug(attribute: str) -> str:
  """Returns an attribute's name in config names.

  >>> slug("Bushy Eyebrows"), slug("5 o' Clock Shadow")
  ('bushy_eyebrows', '5_o_clock_shadow')
  """
  return re.sub(r"[^a-z0-9]+", "_", attribute.lower()).strip("_")


def read_header(lines: Iterable[str]) -> list[str]:
  """Returns the attribute names from the header, consuming lines up to and including it.

  The header is the first line that, without its leading `#`, starts with `person`;
  comment lines before it (`# 2`) are skipped. Raises ValueError if there is none.

  >>> read_header(["# 2", "#\\tperson\\timagenum\\tMale\\tBushy Eyebrows"])
  ['Male', 'Bushy Eyebrows']
  """
  for line in lines:
    fields = [f.strip() for f in line.rstrip("\r\n").lstrip("#").split("\t")]
    fields = [f for f in fields if f]
    if fields[:2] == ["person", "imagenum"]:
      return fields[2:]
  raise ValueError(
      f"{ATTRIBUTES_FILE} has no header line (`#`, `person`, `imagenum` and the attribute"
      " names, tab-separated): is it Kumar et al.'s file, uncut?"
  )


def read_attributes(path: str) -> tuple[list[str], Iterator[AttributeRow]]:
  """Returns the attribute names and an iterator over the rows, streamed from `path`.

  Values are binarised (> 0 -> 1). Raises ValueError naming the line of a row that
  does not have a name, an image number and one number per attribute.
  """
  file = open(path, encoding="utf-8")  # pylint: disable=consider-using-with
  numbered = enumerate(file, start=1)
  try:
    names = read_header(line for _, line in numbered)  # Leaves `numbered` after the header.
  except ValueError:
    file.close()
    raise

  def rows() -> Iterator[AttributeRow]:
    with file:
      for line_number, line in numbered:
        fields = line.rstrip("\r\n").split("\t")
        if not line.strip():
          continue
        try:
          if len(fields) != 2 + len(names):
            raise ValueError(f"{len(fields)} fields, expected {2 + len(names)}")
          values = np.array(fields[2:], np.float64)
          yield AttributeRow(
              person=fields[0].strip().replace(" ", "_"),
              imagenum=int(fields[1]),
              attributes=(values > 0).astype(np.uint8),
          )
        except ValueError as error:
          raise ValueError(
              f"{path} line {line_number}: {error}. Rows are `person<TAB>imagenum<TAB>` then"
              f" {len(names)} tab-separated numbers."
          ) from error

  return names, rows()


def attribute_index(names: list[str], attribute: str) -> int:
  """Returns the column of `attribute`; ValueError listing the valid names if absent.

  >>> attribute_index(["Male", "Smiling"], "Smiling")
  1
  """
  if attribute not in names:
    raise ValueError(
        f"Attribute {attribute!r} is not in {ATTRIBUTES_FILE}; valid attributes: {names}."
    )
  return names.index(attribute)


def find_image_root(manual_dir: str) -> str:
  """Returns `manual_dir/lfw` or `manual_dir/lfw-deepfunneled`, whichever exists.

  Raises FileNotFoundError with the expected layout if neither exists (with a hint
  when `manual_dir` is the image folder itself), ValueError if both do.
  """
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"LFW manual_dir {manual_dir} does not exist. {_EXPECTED_LAYOUT}")
  found = [f for f in IMAGE_FOLDERS if os.path.isdir(os.path.join(manual_dir, f))]
  if len(found) > 1:
    raise ValueError(
        f"{manual_dir} holds both {found[0]}/ and {found[1]}/; keep the one to prepare (or give"
        " each its own manual_dir with a copy of the attribute file)."
    )
  if not found:
    hint = ""
    if os.path.basename(os.path.normpath(manual_dir)) in IMAGE_FOLDERS:
      hint = f" {manual_dir} looks like the image folder itself: pass its parent."
    raise FileNotFoundError(
        f"No LFW image folder (lfw/ or lfw-deepfunneled/) in {manual_dir}.{hint}"
        f" {_EXPECTED_LAYOUT}"
    )
  return os.path.join(manual_dir, found[0])


def center_box(width: int, height: int, fraction: float = CROP_FRACTION) -> tuple[int, int, int, int]:
  """The (left, top, right, bottom) box of the central `fraction` of each side.

  >>> center_box(250, 250)  # The central 125x125 of LFW's 250x250.
  (62, 62, 187, 187)
  """
  crop_w, crop_h = round(width * fraction), round(height * fraction)
  left, top = (width - crop_w) // 2, (height - crop_h) // 2
  return left, top, left + crop_w, top + crop_h


def load_face(path: str, size: int) -> np.ndarray | None:
  """Returns the image at `path` center-cropped and resized (bicubic) to uint8 `[size, size, 3]`.

  None if the file cannot be decoded (a corrupt or truncated JPEG).
  """
  try:
    with Image.open(path) as image:
      return faces.crop_resize_rgb(image, center_box(*image.size), size)
  except OSError:  # PIL.UnidentifiedImageError and truncated files are OSErrors.
    return None


def identity_split(
    labels: np.ndarray, persons: np.ndarray, *, seed: int = SPLIT_SEED
) -> dict[str, np.ndarray]:
  """Splits example indices 60/20/20 so that no person is in two splits.

  scikit-learn's `StratifiedGroupKFold(IDENTITY_FOLDS, shuffle=True, random_state=seed)`
  groups by person and balances `labels` across folds as well as whole persons allow;
  fold 0 is test, fold 1 validation, the others train (`splits.fold_splits`).

  >>> parts = identity_split(np.array([0, 1] * 6), np.array(list("aabbccddeeff")))
  >>> [sorted(set("aabbccddeeff"[i] for i in parts[s])) for s in ("validation", "test")]
  [['f'], ['a', 'd']]
  """
  from sklearn.model_selection import StratifiedGroupKFold  # pylint: disable=g-import-not-at-top

  num_persons = len(np.unique(persons))
  if num_persons < IDENTITY_FOLDS:
    raise ValueError(
        f"The identity split needs at least {IDENTITY_FOLDS} persons; found {num_persons}."
    )
  folds = np.empty(len(labels), np.int64)
  splitter = StratifiedGroupKFold(n_splits=IDENTITY_FOLDS, shuffle=True, random_state=seed)
  for fold, (_, members) in enumerate(splitter.split(np.zeros(len(labels)), labels, persons)):
    folds[members] = fold
  return splits.fold_splits(folds, test_fold=0)


@dataclasses.dataclass(eq=False, kw_only=True)
class LfwConfig(faces.FaceConfig):
  """A stored size, the attribute that is `label`, and the split protocol.

  Any of the 73 attributes can be chosen by building `Lfw(config=LfwConfig(...))`;
  the named configs cover the paper's attributes.
  """

  attribute: str = PAPER_ATTRIBUTES[0]
  protocol: str = PROTOCOLS[0]

  def __post_init__(self):
    if hasattr(super(), "__post_init__"):
      super().__post_init__()
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"Unknown LFW split protocol {self.protocol!r}; valid: {PROTOCOLS}.")


def _configs() -> list[LfwConfig]:
  """Every size, paper attribute and protocol, size-major."""
  return [
      LfwConfig(
          name=f"{size}px_{slug(attribute)}_{protocol}", size=size, attribute=attribute,
          protocol=protocol,
          description=f"{size}x{size} RGB crops; label {attribute!r}; {protocol} split.",
      )
      for size in faces.IMAGE_SIZES
      for attribute in PAPER_ATTRIBUTES
      for protocol in PROTOCOLS
  ]


class Lfw(tfds.core.GeneratorBasedBuilder):
  """LFW faces (manual download) labelled by one of Kumar et al.'s 73 attributes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "64px_male_random"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "From https://vis-www.cs.umass.edu/lfw/ extract lfw.tgz (or lfw-deepfunneled.tgz) into"
      f" manual_dir and put {ATTRIBUTES_FILE} beside it. {_EXPECTED_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    names = ["woman", "man"] if config.attribute == "Male" else ["no", "yes"]
    metadata = faces.skipped_metadata()
    metadata.update(protocol=config.protocol, attribute=config.attribute, attribute_names=[])
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": faces.image_feature(config.size, 3),
            "label": tfds.features.ClassLabel(names=names),
            "attributes": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
            "person": tfds.features.Text(),
            "imagenum": np.int32,
        }),
        supervised_keys=("image", "label"),
        metadata=metadata,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError as error:  # TFDS: manual_dir absent or empty.
      raise FileNotFoundError(f"LFW needs its files in manual_dir: {error}") from error
    image_root = find_image_root(manual_dir)
    attributes_path = os.path.join(manual_dir, ATTRIBUTES_FILE)
    if not os.path.isfile(attributes_path):
      raise FileNotFoundError(
          f"{ATTRIBUTES_FILE} is missing from {manual_dir}: download it from"
          f" https://www.cs.columbia.edu/CAVE/databases/pubfig/download/ . {_EXPECTED_LAYOUT}"
      )
    names, stream = read_attributes(attributes_path)
    column = attribute_index(names, self.builder_config.attribute)
    self.info.metadata["attribute_names"] = names
    rows, seen = [], set()
    for row in stream:
      if (row.person, row.imagenum) in seen:
        faces.count_skipped(self.info.metadata, SKIP_DUPLICATE)
      elif not os.path.isfile(os.path.join(image_root, row.relative_path)):
        faces.count_skipped(self.info.metadata, SKIP_ABSENT)
      else:
        seen.add((row.person, row.imagenum))
        rows.append(row)
    if not rows:
      raise FileNotFoundError(
          f"None of the images listed in {ATTRIBUTES_FILE} is in {image_root}."
          f" {_EXPECTED_LAYOUT}"
      )
    labels = np.array([row.attributes[column] for row in rows])
    if self.builder_config.protocol == "identity":
      parts = identity_split(labels, np.array([row.person for row in rows]))
    else:
      parts = stratified_split(labels)
    return {
        name: self._generate_examples(image_root, [rows[i] for i in indices], column)
        for name, indices in parts.items()
    }

  def _generate_examples(
      self, image_root: str, rows: list[AttributeRow], column: int
  ) -> Iterator[tuple[str, dict]]:
    """Yields (`<person>_<NNNN>`, example), decoding in chunks on all cores."""
    size = self.builder_config.size
    load = lambda row: load_face(os.path.join(image_root, row.relative_path), size)
    for row, image in faces.load_in_chunks(rows, load):
      if image is None:
        faces.count_skipped(self.info.metadata, SKIP_CORRUPT)
        continue
      yield f"{row.person}_{row.imagenum:04d}", {
          "image": image,
          "label": int(row.attributes[column]),
          "attributes": row.attributes,
          "person": row.person,
          "imagenum": row.imagenum,
      }
