"""100 real LFW faces that scikit-image ships, labelled by gender, as a TFDS builder.

Images: `skimage.data.lfw_subset()` rows 0-99, 25x25 gray face crops from Labeled
Faces in the Wild (Huang et al., 2007); rows 100-199 are non-faces and are not used.

Labels: `resources/lfw_subset_gender.csv` (columns `index`, `male`, `uncertain`),
made for dfm by one annotator looking at each crop upscaled 10x to 13x, with a second
pass over every face and no model predictions: 82 men, 18 women, 11 rows marked
uncertain (a hard call at 25x25). Good, not perfect, ground truth.

Features: `image` uint8 `[size, size, 1]`, `label` the `male` attribute (0 woman,
1 man), `uncertain` (0 no, 1 yes).

Configs `{size}px_fold{k}`: crops stored at `size` (25 is the original, others are
Pillow bicubic resizes), and the 100 faces cut into 5 stratified folds (seeded by
`SPLIT_SEED`) of which fold `k` is `test`, fold `k+1 (mod 5)` is `validation` and the
other three are `train` (60/20/20). A config picks its test fold by name:

  python -m experiments.prepare --dataset=lfw_subset/32px_fold3 --data_dir=data
"""

import csv
import dataclasses
import importlib.resources
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from dfm.data import faces
from dfm.data import splits
from dfm.data.splits import SPLIT_SEED

NUM_FACES = 100
NUM_FOLDS = 5
_LABELS_CSV = "lfw_subset_gender.csv"


def load_labels() -> dict[str, np.ndarray]:
  """Returns the packaged `male` and `uncertain` columns, in row order of the faces.

  Raises ValueError if the file does not label faces 0..99 with 0/1 values.

  >>> int(load_labels()["male"].sum())
  82
  """
  text = importlib.resources.files("dfm.data").joinpath("resources", _LABELS_CSV).read_text()
  rows = list(csv.DictReader(text.splitlines()))
  columns = {
      key: np.array([int(row[key]) for row in rows]) for key in ("index", "male", "uncertain")
  }
  valid_values = all(set(columns[key].tolist()) <= {0, 1} for key in ("male", "uncertain"))
  if columns["index"].tolist() != list(range(NUM_FACES)) or not valid_values:
    raise ValueError(f"{_LABELS_CSV} must label faces 0..{NUM_FACES - 1} with 0/1 values.")
  return {"male": columns["male"], "uncertain": columns["uncertain"]}


@dataclasses.dataclass(eq=False, kw_only=True)
class LfwSubsetConfig(faces.FaceConfig):
  """A stored size and which of the `NUM_FOLDS` folds is `test`."""

  test_fold: int = 0


def _configs() -> list[LfwSubsetConfig]:
  """Every size with every test fold, size-major: the first is `25px_fold0`."""
  return [
      LfwSubsetConfig(
          name=f"{size}px_fold{fold}", size=size, test_fold=fold,
          description=f"{size}x{size} crops; fold {fold} is test.",
      )
      for size in faces.IMAGE_SIZES
      for fold in range(NUM_FOLDS)
  ]


class LfwSubset(tfds.core.GeneratorBasedBuilder):
  """100 real LFW face crops (scikit-image), label `male`, 5 stratified folds."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": faces.image_feature(size, 1),
            "label": tfds.features.ClassLabel(names=["woman", "man"]),
            "uncertain": tfds.features.ClassLabel(names=["no", "yes"]),
        }),
        supervised_keys=("image", "label"),
        metadata=faces.skipped_metadata(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download: the faces ship with scikit-image.
    from skimage.data import lfw_subset  # pylint: disable=g-import-not-at-top

    images, labels = lfw_subset()[:NUM_FACES], load_labels()
    folds = splits.stratified_folds(labels["male"], num_folds=NUM_FOLDS, seed=SPLIT_SEED)
    return {
        name: self._generate_examples(images, labels, indices)
        for name, indices in splits.fold_splits(folds, self.builder_config.test_fold).items()
    }

  def _generate_examples(
      self, images: np.ndarray, labels: dict[str, np.ndarray], indices: np.ndarray
  ) -> Iterator[tuple[int, dict]]:
    """Yields (row in `lfw_subset()`, example) for the faces at `indices`."""
    for i in indices:
      yield int(i), {
          "image": faces.resize_face(images[i], self.builder_config.size),
          "label": int(labels["male"][i]),
          "uncertain": int(labels["uncertain"][i]),
      }
