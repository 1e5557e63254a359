"""Query-only DFT: the noise of a model that can only be scored (no gradients, a budget).

:mod:`dfm.query.step` holds the update (gradient estimates from one batched call
of the black box per step, with data, direction and time priors);
:mod:`dfm.query.evolution` the evosax strategies (one call per generation);
:mod:`dfm.query.distill` DFT through a student distilled from the replies;
:mod:`dfm.query.selection` the rules a run follows (settings check, query budget,
significance-tested selection on validation); :mod:`dfm.query.budget` the budget
as the schedule's clock. The resumable phase that runs them is
:func:`dfm.run.phases.fit_noise_by_queries`.
"""
from dfm.query.distill import StudentOptions
from dfm.query.distill import make_distill_step
from dfm.query.evolution import STRATEGIES
from dfm.query.evolution import make_evolution_step
from dfm.query.selection import Candidate
from dfm.query.selection import SelectionRule
from dfm.query.selection import SpentTally
from dfm.query.selection import check_query
from dfm.query.selection import estimate_options
from dfm.query.selection import keep_best
from dfm.query.selection import make_black_box_eval_step
from dfm.query.selection import make_budget_stop
from dfm.query.selection import mcnemar_p_value
from dfm.query.selection import significant_gain
from dfm.query.selection import validation_cost
from dfm.query.step import DISTILL
from dfm.query.step import EstimateOptions
from dfm.query.step import TrueGradient
from dfm.query.step import init_query_state
from dfm.query.step import make_cosine_step
from dfm.query.step import make_query_step
from dfm.query.step import make_true_gradient
from dfm.query.step import with_ledger

__all__ = ["DISTILL", "STRATEGIES", "Candidate", "EstimateOptions", "SelectionRule", "SpentTally",
           "StudentOptions", "TrueGradient", "check_query", "estimate_options",
           "init_query_state", "keep_best", "make_black_box_eval_step", "make_budget_stop",
           "make_cosine_step", "make_distill_step", "make_evolution_step", "make_query_step",
           "make_true_gradient", "mcnemar_p_value", "significant_gain", "validation_cost",
           "with_ledger"]
