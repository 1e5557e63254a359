"""K DFT settings in one run: the values of ``config.dft.lams`` x ``config.dft.lrs``.

A tuple in ``config.dft.lams`` (or ``lrs``) replaces the scalar ``dft.lam`` (or
``dft.lr``); the K settings are every ``(lam, lr)`` pair, lams outer, lrs inner
(``lams=(0.01, 0.1)``, ``lrs=(0.1, 0.3)``: K = 4). They share everything else,
the seed included: one shuffle order feeds all K (the white-box step draws no
random numbers and every noise starts at zero, so a seed changes nothing but the
order; run one K run per seed for seeds). Setting ``k`` is the run a single
``--config.dft.lam=LAM --config.dft.lr=LR`` would be; its folder is named for the
fields given as tuples, as a sweep names its points (``dft.lam=0.01,dft.lr=0.3``).

Example::

  [s.name for s in settings_of(config)]  # ['dft.lam=0.01', 'dft.lam=0.1'] for lams=(0.01, 0.1)
"""
import re
from typing import Any, NamedTuple

import ml_collections

TUPLE_FIELDS = ("lams", "lrs")  # In config.dft: what K settings vary.
_SUFFIX = re.compile(r"(.+)_k(\d+)")


class Setting(NamedTuple):
  """One of the K settings: its folder ``name``, ``lam``, ``lr`` and the ``config`` a
  separate run of it would have (scalar lam and lr, empty tuples)."""

  name: str
  lam: float
  lr: float
  config: ml_collections.ConfigDict


def has_settings(config: ml_collections.ConfigDict) -> bool:
  """True when ``config.dft.lams`` or ``config.dft.lrs`` holds values: a K-settings run."""
  return any(config.dft.get(field, ()) for field in TUPLE_FIELDS)


def _single(config: ml_collections.ConfigDict, lam: float, lr: float) -> ml_collections.ConfigDict:
  single = ml_collections.ConfigDict(config.to_dict())
  single.dft.update(lam=lam, lr=lr, lams=(), lrs=())
  single.lock()
  return single


def settings_of(config: ml_collections.ConfigDict) -> list[Setting]:
  """The K settings of ``config``: each ``(lam, lr)`` of ``lams`` x ``lrs``, in order."""
  lams = tuple(config.dft.get("lams", ())) or (config.dft.lam,)
  lrs = tuple(config.dft.get("lrs", ())) or (config.dft.lr,)
  return [Setting(_name(config, lam, lr), lam, lr, _single(config, lam, lr))
          for lam in map(float, lams) for lr in map(float, lrs)]


def _name(config: ml_collections.ConfigDict, lam: float, lr: float) -> str:
  """``dft.lam=0.01,dft.lr=0.3``: the values of the fields given as tuples."""
  given = {"dft.lam": ("lams", lam), "dft.lr": ("lrs", lr)}
  return ",".join(f"{key}={value!r}" for key, (field, value) in given.items()
                  if config.dft.get(field, ()))


def per_setting_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
  """``{"loss": [K]}`` -> ``{"loss_k0": ..., "loss_k1": ...}``: flat scalars, setting-major.

  Example::

    per_setting_metrics({"loss": np.array([0.5, 0.4])})  # {'loss_k0': 0.5, 'loss_k1': 0.4}
  """
  size = len(next(iter(metrics.values())))
  return {f"{name}_k{k}": value[k] for k in range(size) for name, value in metrics.items()}


def setting_records(records: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
  """Setting ``k``'s log from a K run's records: its ``*_k<k>`` values under their
  own names, with the shared fields (``batch``, ``of``, ``eta_s``), as a separate
  run logs them."""
  kept = []
  for record in records:
    own = {}
    for key, value in record.items():
      match = _SUFFIX.fullmatch(key)
      if match is None:
        own[key] = value
      elif int(match[2]) == k:
        own[match[1]] = value
    kept.append(own)
  return kept
