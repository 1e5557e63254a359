r"""MUCT (Milborrow et al., 2010) read as published, faces found by Viola-Jones, as a TFDS builder.

The publisher (https://github.com/StephenMilborrow/muct, formerly www.milbo.org/muct)
ships five camera archives, `muct-a-jpg-v1.tar.gz` ... `muct-e-jpg-v1.tar.gz`, that
each extract into `jpg/`, and `muct-landmarks-v1.tar.gz`. `manual_dir` must hold them
extracted, unchanged (it is only read, never modified):

  MANUAL_DIR/jpg/i000qa-fn.jpg ...                       (the five camera archives)
  MANUAL_DIR/muct-landmarks/muct76-opencv.csv            (the landmarks archive)

An image's name is `i`, the subject's 3-digit number, two lowercase letters (lighting
and camera view, e.g. `qa`), `-`, then a tag whose first letter is the gender (`f` or
`m`; e.g. `fn`, `mg`), and `.jpg` (`FILE_NAME_PATTERN`). The landmark file must be
present (it marks a complete download) but its landmarks are not used.

The paper's protocol (3,755 images, 3,706 kept): OpenCV's Viola-Jones frontal-face Haar
cascade (`haarcascade_frontalface_default.xml`, OpenCV's default parameters:
`scaleFactor=1.1`, `minNeighbors=3`; faces narrower than `MIN_FACE_FRACTION` of the
image's shorter side are ignored) runs on every image in gray. An image where no face is
found is dropped and counted in the metadata's `skipped` (`SKIP_NO_FACE`), as is one
Pillow cannot decode (`SKIP_CORRUPT`); the run goes on. The largest face found is
cropped with a margin of `MARGIN` (20%) of its side on each side, clipped to the image
(so a face at the border gives a crop that is not quite square), and resized with Pillow
bicubic to uint8 RGB `[size, size, 3]`. `label` is the gender (0 female, 1 male); the
split is the paper's 60/20/20 per class, seeded (`splits.stratified_split`).

Features: `image`, `label`, `subject` (int32, e.g. 0 for `i000qa-fn.jpg`), `file_name`.
Configs `{size}px` for every size in `faces.IMAGE_SIZES`, default `64px`.

Publishing faces: MUCT's README forbids reproducing the faces of any subject other than
000, 001, 002, 200, 201, 400, 401 and 402 in public documents. Every figure that shows
MUCT faces must keep only examples whose `subject` is in `PUBLISHABLE_SUBJECTS`
(`is_publishable`).

Detection runs once per image in a thread pool (OpenCV releases the GIL), in chunks of
`faces.CHUNK_SIZE`; only each kept image's box is held, then the crops are decoded
again chunk by chunk while writing, so memory stays flat in the dataset's size.
`--max_examples` caps the examples written, but detection still visits every image.

  python -m experiments.prepare --dataset=muct/64px --manual_dir=~/muct --data_dir=data
"""

import dataclasses
import os
import re
import threading
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dfm.data import faces
from dfm.data.splits import stratified_split

IMAGES_DIR = "jpg"
LANDMARKS_FILE = os.path.join("muct-landmarks", "muct76-opencv.csv")
FILE_NAME_PATTERN = re.compile(
    r"i(?P<subject>\d{3})(?P<view>[a-z]{2})-(?P<gender>[fm])[a-z0-9]*\.jpg"
)
FILE_NAME_FORMAT = "i<3-digit subject><2 letters>-<f|m><tag letters>.jpg, e.g. i000qa-fn.jpg"
GENDERS = ("f", "m")  # Label 0 female, 1 male.
PUBLISHABLE_SUBJECTS = frozenset({0, 1, 2, 200, 201, 400, 401, 402})
CASCADE_FILE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1  # OpenCV's defaults.
MIN_NEIGHBORS = 3
MIN_FACE_FRACTION = 0.2  # Ignore faces narrower than this fraction of the shorter side.
MARGIN = 0.2  # Added to each side of the detected box, as a fraction of its side.
SKIP_NO_FACE = faces.SKIP_NO_FACE
SKIP_CORRUPT = faces.SKIP_CORRUPT
_EXAMPLE_PATH = f"{IMAGES_DIR}/i000qa-fn.jpg"
_EXPECTED_LAYOUT = (
    f"Expected MUCT as published: MANUAL_DIR/{_EXAMPLE_PATH} (the five camera archives"
    f" muct-{{a..e}}-jpg-v1.tar.gz extracted) and MANUAL_DIR/{LANDMARKS_FILE}"
    " (muct-landmarks-v1.tar.gz extracted); see https://github.com/StephenMilborrow/muct."
)

Box = tuple[int, int, int, int]  # left, top, width, height in pixels.


@dataclasses.dataclass(frozen=True)
class MuctImage:
  """One MUCT image: its file name and what the name says."""

  file_name: str  # e.g. "i000qa-fn.jpg"
  subject: int  # e.g. 0
  view: str  # The two letters after the subject (lighting, camera), e.g. "qa".
  label: int  # 0 female, 1 male.


def parse_file_name(file_name: str) -> MuctImage:
  """Returns what a MUCT image's name says; ValueError naming it and the pattern if not.

  >>> parse_file_name("i402re-mg.jpg")
  MuctImage(file_name='i402re-mg.jpg', subject=402, view='re', label=1)
  """
  match = FILE_NAME_PATTERN.fullmatch(file_name)
  if match is None:
    raise ValueError(
        f"MUCT image {file_name!r} does not parse: expected {FILE_NAME_FORMAT}"
        f" (pattern {FILE_NAME_PATTERN.pattern}). Is {IMAGES_DIR}/ MUCT's, unchanged?"
    )
  return MuctImage(
      file_name=file_name,
      subject=int(match["subject"]),
      view=match["view"],
      label=GENDERS.index(match["gender"]),
  )


def is_publishable(subject: int) -> bool:
  """Whether MUCT's README allows reproducing this subject's face in public documents.

  >>> is_publishable(401), is_publishable(3)
  (True, False)
  """
  return int(subject) in PUBLISHABLE_SUBJECTS


def list_images(manual_dir: str) -> list[MuctImage]:
  """Returns every `jpg/*.jpg` of `manual_dir`, parsed, sorted by name; checks the layout.

  Raises FileNotFoundError with the expected layout (and a hint when `manual_dir` is
  the image folder itself) if `jpg/`, its images or the landmark file are missing;
  ValueError if an image's name does not parse. Files not ending in `.jpg` are ignored.
  """
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"MUCT's manual_dir {manual_dir} does not exist. {_EXPECTED_LAYOUT}")
  images_dir = os.path.join(manual_dir, IMAGES_DIR)
  if not os.path.isdir(images_dir):
    hint = ""
    if os.path.basename(os.path.normpath(manual_dir)) == IMAGES_DIR or any(
        FILE_NAME_PATTERN.fullmatch(name) for name in os.listdir(manual_dir)
    ):
      hint = f" {manual_dir} looks like the image folder itself: pass its parent."
    raise FileNotFoundError(
        f"{manual_dir} is not MUCT's folder: it has no {IMAGES_DIR}/.{hint} {_EXPECTED_LAYOUT}"
    )
  names = sorted(n for n in os.listdir(images_dir) if n.lower().endswith(".jpg"))
  if not names:
    raise FileNotFoundError(f"{images_dir} holds no .jpg images. {_EXPECTED_LAYOUT}")
  if not os.path.isfile(os.path.join(manual_dir, LANDMARKS_FILE)):
    raise FileNotFoundError(
        f"MUCT's landmark file {os.path.join(manual_dir, LANDMARKS_FILE)} is missing"
        f" (extract muct-landmarks-v1.tar.gz into {manual_dir}). {_EXPECTED_LAYOUT}"
    )
  return [parse_file_name(name) for name in names]


_local = threading.local()


def _cascade():
  """This thread's frontal-face cascade (one per thread: detection runs in a thread pool)."""
  if not hasattr(_local, "cascade"):
    import cv2  # pylint: disable=g-import-not-at-top  # Only preparing MUCT needs OpenCV.

    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
      raise RuntimeError(
          f"OpenCV could not load {path}: install opencv-python-headless 4.x (5.0 has no"
          " Haar cascades)."
      )
    _local.cascade = cascade
  return _local.cascade


def detect_face(gray: np.ndarray) -> Box | None:
  """Returns the largest face the Haar cascade finds in a uint8 `[H, W]` image, or None.

  >>> detect_face(np.full((240, 320), 128, np.uint8)) is None
  True
  """
  min_side = max(1, round(MIN_FACE_FRACTION * min(gray.shape)))
  found = _cascade().detectMultiScale(
      gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(min_side, min_side)
  )
  if len(found) == 0:
    return None
  left, top, width, height = max(found, key=lambda box: int(box[2]) * int(box[3]))
  return int(left), int(top), int(width), int(height)


def margin_box(box: Box, image_size: tuple[int, int], margin: float = MARGIN) -> Box:
  """Returns `box` grown by `margin` of its side on each side, clipped to the image.

  `image_size` is (width, height), as Pillow gives it.

  >>> margin_box((100, 100, 50, 50), (480, 640)), margin_box((0, 10, 50, 50), (480, 640))
  ((90, 90, 70, 70), (0, 0, 60, 70))
  """
  left, top, width, height = box
  dx, dy = round(margin * width), round(margin * height)
  x0, y0 = max(0, left - dx), max(0, top - dy)
  x1, y1 = min(image_size[0], left + width + dx), min(image_size[1], top + height + dy)
  return x0, y0, x1 - x0, y1 - y0


def find_face(path: str) -> tuple[Box | None, str | None]:
  """Returns (the largest face's box with its margin, None), or (None, why it is skipped)."""
  try:
    with Image.open(path) as image:
      gray = np.asarray(image.convert("L"))
  except OSError:  # PIL.UnidentifiedImageError and truncated files are OSErrors.
    return None, SKIP_CORRUPT
  box = detect_face(gray)
  if box is None:
    return None, SKIP_NO_FACE
  return margin_box(box, (gray.shape[1], gray.shape[0])), None


def crop_face(path: str, box: Box, size: int) -> np.ndarray:
  """Returns `box` of the image at `path` in RGB, resized (bicubic) to uint8 `[size, size, 3]`."""
  left, top, width, height = box
  with Image.open(path) as image:
    return faces.crop_resize_rgb(image, (left, top, left + width, top + height), size)


def _configs() -> list[faces.FaceConfig]:
  return [
      faces.FaceConfig(
          name=f"{size}px", size=size,
          description=f"{size}x{size} RGB crops of the detected face; label gender.",
      )
      for size in faces.IMAGE_SIZES
  ]


class Muct(tfds.core.GeneratorBasedBuilder):
  """MUCT faces (manual download) found by Viola-Jones, labelled by gender."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "64px"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _EXPECTED_LAYOUT

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    metadata = faces.skipped_metadata()
    metadata.update(publishable_subjects=sorted(PUBLISHABLE_SUBJECTS))
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": faces.image_feature(size, 3),
            "label": tfds.features.ClassLabel(names=["woman", "man"]),
            "subject": np.int32,
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=metadata,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    # TFDS defaults a missing manual_dir to <data_dir>/downloads/manual: check it ourselves.
    manual_dir = dl_manager._manual_dir  # pylint: disable=protected-access
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
    images_dir = os.path.join(manual_dir, IMAGES_DIR)
    kept, boxes = [], []
    load = lambda image: find_face(os.path.join(images_dir, image.file_name))
    for image, (box, skipped) in faces.load_in_chunks(list_images(manual_dir), load):
      if skipped:
        faces.count_skipped(self.info.metadata, skipped)
      else:
        kept.append(image)
        boxes.append(box)
    if not kept:
      raise ValueError(f"No face found in any image of {images_dir}.")
    parts = stratified_split(np.array([image.label for image in kept]))
    return {
        name: self._generate_examples(images_dir, [(kept[i], boxes[i]) for i in indices])
        for name, indices in parts.items()
    }

  def _generate_examples(
      self, images_dir: str, found: list[tuple[MuctImage, Box]]
  ) -> Iterator[tuple[str, dict]]:
    """Yields (file name, example), cropping in chunks on all cores."""
    size = self.builder_config.size
    load = lambda item: crop_face(os.path.join(images_dir, item[0].file_name), item[1], size)
    for (image, _), crop in faces.load_in_chunks(found, load):
      yield image.file_name, {
          "image": crop,
          "label": image.label,
          "subject": image.subject,
          "file_name": image.file_name,
      }
