"""The query budget as the clock of query-only DFT: how many batches it pays for,
and the learning rate at each point of it.

With ``config.budget.queries = B`` images (or ``config.budget.calls``), the run
does not end when ``config.dft.epochs`` run out: the data repeat until the budget
stop (:func:`dfm.query.make_budget_stop`), and the learning rate follows the
share of the budget spent, ``s = spent / B``, not the step count::

  constant: lr_s = lr
  cosine:   lr_s = lr * 0.5 * (1 + cos(pi * min(s, 1)))

so the schedule ends where the budget does, whatever a step costs (``focus``
makes steps cheaper as images settle). Without a budget, the epochs and the
step-count schedule of :func:`dfm.optim.make_optimizer` apply as before.

Example::

  optimizer = dfm.optim.clocked_optimizer("adam", 0.1)
  opt = dfm.optim.set_learning_rate(optimizer.init(noise),
                                    budget_learning_rate(0.1, "cosine", 0.5))
"""
import math

import ml_collections

from dfm.black_box.base import BlackBox
from dfm.query.selection import batch_cost, validation_cost


def budget_learning_rate(lr: float, schedule: str, share_spent: float) -> float:
  """The learning rate after spending ``share_spent`` of the budget (module docstring)."""
  if schedule == "constant":
    return lr
  return lr * 0.5 * (1.0 + math.cos(math.pi * min(max(share_spent, 0.0), 1.0)))


def budget_share(config: ml_collections.ConfigDict, ledger: dict) -> float:
  """The share of the budget ``ledger`` has spent: images if ``budget.queries`` is
  set, else calls; 0 without a budget."""
  budget = config.budget
  if budget.queries:
    return int(ledger["images"]) / budget.queries
  return int(ledger["calls"]) / budget.calls if budget.calls else 0.0


def has_budget(config: ml_collections.ConfigDict) -> bool:
  return bool(config.budget.queries or config.budget.calls)


def batches_budget_pays(config: ml_collections.ConfigDict, model: BlackBox,
                        validation_size: int, train_size: int) -> int:
  """An upper bound on the batches the budget pays for (the run stops at the
  budget, usually sooner): what is left after scoring validation once, over the
  cheapest batch (an epoch's last, padded batch holds ``train_size % batch_size``
  real images)."""
  validation = validation_cost(model, validation_size, config.eval_batch_size)
  batch_size = config.dft.batch_size
  cheapest = batch_cost(config, model, smallest_batch=train_size % batch_size or batch_size)
  bounds = []
  if config.budget.queries:
    bounds.append((config.budget.queries - validation.images) // cheapest.images)
  if config.budget.calls:
    bounds.append((config.budget.calls - validation.calls) // cheapest.calls)
  return max(1, min(bounds))
