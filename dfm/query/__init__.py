"""Query-only DFT: the noise of a model that can only be scored (no gradients, a budget).

:mod:`dfm.query.step` holds the update (gradient estimates from one batched call
of the black box per step); :mod:`dfm.query.selection` the rules a run follows
(settings check, query budget, selection of the best noise on validation). The
resumable phase that runs them is :func:`dfm.run.phases.fit_noise_by_queries`.
"""
from dfm.query.selection import SpentTally
from dfm.query.selection import check_query
from dfm.query.selection import keep_best
from dfm.query.selection import make_black_box_eval_step
from dfm.query.selection import make_budget_stop
from dfm.query.selection import validation_cost
from dfm.query.step import TrueGradient
from dfm.query.step import init_query_state
from dfm.query.step import make_query_step
from dfm.query.step import make_true_gradient
from dfm.query.step import with_ledger

__all__ = ["SpentTally", "TrueGradient", "check_query", "init_query_state", "keep_best",
           "make_black_box_eval_step", "make_budget_stop", "make_query_step",
           "make_true_gradient", "validation_cost", "with_ledger"]
