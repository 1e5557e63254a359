"""Query-only DFT by evolution strategies: each generation is ONE batched call.

Instead of estimating ``grad C`` for an optax update, a strategy of ``evosax``
(CMA-ES, Sep-CMA-ES, OpenAI-ES) keeps a search distribution over the noise's
coefficients (every pixel, or with ``frequencies=K`` each leaf's ``K x K``
lowest DCT frequencies, :mod:`dfm.estimators`) and, per generation:

1. ``ask``: a population of ``P = 2q`` candidate noises (the cost of a gradient
   step with ``q`` directions);
2. the batch under every candidate, ``P * B`` images, scored in one call;
3. ``tell``: the fitness of candidate ``p`` is the DFT loss
   ``mean_b C(N_p; x_b) + lam * A(N_p)`` (``A`` exact, no model needed).

The noise is the distribution's mean, in the state's ``noise``; the strategy's
state replaces the optimizer's in ``opt``, so checkpoints, the ledger, the budget
and selection on validation are those of :mod:`dfm.query.step`.

Example::

  step, init = make_evolution_step(model, lam=0.01, strategy="cma_es", population=20,
                                   scale=0.05, like=jnp.zeros((28, 28, 1)))
  state, metrics = step(init(seed=0, validation_size=360), batch)
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfm import estimators, losses
from dfm.black_box.base import BlackBox, add_spent, known_true_class_probability, spent_of
from dfm.dft import noise_norms
from dfm.query.step import images_per_batch, init_query_state, rows_to_send, with_ledger
from dfm.transform import Transform, get_transform, perturb
from dfm.types import Batch, Metrics, PyTree, QueryState

STRATEGIES = ("cma_es", "sep_cma_es", "open_es")


def make_strategy(name: str, population: int, coefficients: PyTree, *, scale: float,
                  learning_rate: float) -> tuple[object, object]:
  """``(strategy, params)`` of the evosax strategy ``name`` over ``coefficients``:
  initial spread ``scale`` (CMA-ES) or fixed spread ``scale`` with Adam at
  ``learning_rate`` on the mean (OpenAI-ES, antithetic)."""
  # Imported here: importing evosax computes with JAX, which starts its backend, and
  # a multi-host run must call jax.distributed.initialize before that.
  import evosax.algorithms as algorithms  # pylint: disable=import-outside-toplevel
  if name == "open_es":
    strategy = algorithms.Open_ES(population, coefficients,
                                  optimizer=optax.adam(learning_rate),
                                  std_schedule=optax.constant_schedule(scale))
    return strategy, strategy.default_params
  strategy = {"cma_es": algorithms.CMA_ES, "sep_cma_es": algorithms.Sep_CMA_ES}[name](
      population, coefficients)
  return strategy, strategy.default_params.replace(std_init=scale)


def coefficient_template(like: PyTree, frequencies: int) -> PyTree:
  """Zeros in the search space: the noise's own shape, or its low frequencies."""
  if not frequencies:
    return jax.tree.map(jnp.zeros_like, like)
  return jax.tree.map(lambda leaf: jnp.zeros(
      estimators.low_frequency_shape(tuple(leaf.shape), frequencies), jnp.float32), like)


def to_noise(coefficients: PyTree, like: PyTree, frequencies: int) -> PyTree:
  """The noise of search-space ``coefficients`` (any leading axes)."""
  if not frequencies:
    return coefficients
  return jax.tree.map(lambda c, leaf: estimators.from_frequencies(c, tuple(leaf.shape)),
                      coefficients, like)


def make_evolution_step(model: BlackBox, *, lam: float, strategy: str, population: int,
                        scale: float, like: PyTree, frequencies: int = 0,
                        learning_rate: float = 0.1, transform: str | Transform = "tanh",
                        class_term: str | losses.ClassTerm = "hinge",
                        images_per_step: int = 0) -> tuple[Callable, Callable]:
  """``(step, init)``: the generation step ``step(state, batch) -> (state, metrics)``
  and ``init(seed, validation_size) -> state``, the zero noise and a fresh strategy.

  ``images_per_step`` caps a generation's images (``P * B``) by probing fewer batch
  images. The budget's learning-rate clock does not apply: CMA-ES adapts its own
  step, OpenAI-ES keeps ``learning_rate``. Metrics: ``loss``, ``class_term`` and
  ``appearance`` (means over the population),
  ``accuracy`` over the population's images, ``best_fitness`` of the generation,
  ``spread`` (the strategy's std), ``noise_l2``, ``noise_linf`` and the ledger.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown evolution strategy {strategy!r}; choose one of {STRATEGIES}.")
  if population < 2 or population % 2:
    raise ValueError(f"An evolution strategy needs an even population >= 2, got {population}.")
  transform, class_term = get_transform(transform), losses.get_class_term(class_term)
  template = coefficient_template(like, frequencies)
  es, params = make_strategy(strategy, population, template, scale=scale,
                             learning_rate=learning_rate)

  @jax.jit
  def ask(es_state, key, images):
    candidates, es_state = es.ask(key, es_state, params)
    noises = to_noise(candidates, like, frequencies)
    probes = jax.vmap(lambda n: perturb(images, n, transform=transform))(noises)
    return probes.reshape(-1, *images.shape[1:]), candidates, noises, es_state

  @jax.jit
  def tell(es_state, key, images, labels, candidates, noises, probabilities):
    true_prob = known_true_class_probability(probabilities, jnp.tile(labels, population))
    values = losses.class_term_per_image(true_prob=true_prob, class_term=class_term)
    values = values.reshape(population, -1).mean(axis=1)
    appearance = jax.vmap(lambda n: losses.appearance_distance(
        images=images, perturbed=perturb(images, n, transform=transform)))(noises)
    fitness = values + lam * appearance
    es_state, _ = es.tell(key, candidates, fitness, es_state, params)
    noise = to_noise(es.get_mean(es_state), like, frequencies)
    correct = jnp.argmax(jnp.nan_to_num(probabilities, nan=-1.0), -1) == jnp.tile(
        labels, population)
    metrics = {"loss": fitness.mean(), "class_term": values.mean(),
               "appearance": appearance.mean(), "accuracy": correct.mean(),
               "best_fitness": fitness.min(), "spread": jnp.mean(es_state.std),
               **noise_norms(noise)}
    return es_state, noise, metrics

  def init(seed: int, validation_size: int) -> QueryState:
    state = init_query_state(jax.tree.map(jnp.zeros_like, like), optax.identity(), seed=seed,
                             validation_size=validation_size)
    key = jax.random.fold_in(jax.random.key(seed), 2**31 - 1)  # Not a step's key.
    return {**state, "opt": es.init(key, template, params)}

  def step(state: QueryState, batch: Batch) -> tuple[QueryState, Metrics]:
    images, labels = rows_to_send(batch, images_per_batch(len(batch["label"]), population,
                                                          images_per_step))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    try:
      probes, candidates, noises, es_state = ask(state["opt"], key, images)
      reply = model.score(np.asarray(probes))
      es_state, noise, metrics = tell(es_state, key, images, labels, candidates, noises,
                                      reply.probabilities)
    except BaseException as error:  # Ctrl-C included: what was sent stays counted.
      raise with_ledger(error, state["queries"], spent_of(error))
    queries = add_spent(state["queries"], reply.spent)
    metrics.update({f"queries_{name}": value for name, value in queries.items()})
    return {**state, "noise": noise, "opt": es_state, "step": state["step"] + 1,
            "queries": queries}, metrics

  return step, init
