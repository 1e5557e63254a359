"""How every dataset is split: stratified by class, seeded, part of its definition.

- :func:`stratified_split`: 60/20/20 per class (digits, LFW, MUCT: the paper's protocol);
- :func:`stratified_folds` and :func:`fold_splits`: k folds, one test, the next
  validation (the embedded LFW faces, LFW by identity).
"""
import numpy as np

SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
SPLIT_SEED = 20190127  # Fixed: the splits are part of each dataset's definition.


def stratified_split(
    labels: np.ndarray, *, seed: int = SPLIT_SEED
) -> dict[str, np.ndarray]:
  """Splits example indices per class into `SPLIT_FRACTIONS`, deterministically.

  For each class in increasing order, one `np.random.default_rng(seed)` shuffles
  that class's indices; the first `round(0.6 n)` go to train, up to `round(0.8 n)`
  to validation, the rest to test. Each split's indices are returned sorted.

  >>> parts = stratified_split(np.repeat(np.arange(10), 5))
  >>> [len(parts[s]) for s in ("train", "validation", "test")]
  [30, 10, 10]
  """
  rng = np.random.default_rng(seed)
  cuts = np.cumsum(list(SPLIT_FRACTIONS.values()))[:-1]
  parts = {name: [] for name in SPLIT_FRACTIONS}
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    bounds = np.round(cuts * len(members)).astype(int)
    for name, chunk in zip(parts, np.split(members, bounds)):
      parts[name].append(chunk)
  return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def stratified_folds(labels: np.ndarray, *, num_folds: int, seed: int) -> np.ndarray:
  """Returns each example's fold in 0..num_folds-1: stratified by label, seeded.

  scikit-learn's `StratifiedKFold(shuffle=True, random_state=seed)`: every fold
  holds about 1/num_folds of each class, and each example is in exactly one fold.

  >>> stratified_folds(np.array([0, 0, 1, 1]), num_folds=2, seed=0).tolist()
  [1, 0, 0, 1]
  """
  # Imported here: only preparing needs it, and it takes ~2 s to import.
  from sklearn.model_selection import StratifiedKFold  # pylint: disable=g-import-not-at-top

  folds = np.empty(len(labels), np.int64)
  splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
  for fold, (_, members) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
    folds[members] = fold
  return folds


def fold_splits(folds: np.ndarray, test_fold: int) -> dict[str, np.ndarray]:
  """Returns the example indices of train/validation/test when `test_fold` is the test.

  The next fold (cyclically) is validation, the others train.

  >>> {k: v.tolist() for k, v in fold_splits(np.array([0, 1, 2, 0]), 2).items()}
  {'train': [1], 'validation': [0, 3], 'test': [2]}
  """
  validation_fold = (test_fold + 1) % (folds.max() + 1)
  return {
      "train": np.flatnonzero((folds != test_fold) & (folds != validation_fold)),
      "validation": np.flatnonzero(folds == validation_fold),
      "test": np.flatnonzero(folds == test_fold),
  }
