"""XLA compiler options that every jitted function of dfm compiles with."""
import jax

# On CPU, XLA's YNNPACK library by default also takes convolutions wider than 16
# channels and reductions, both slower on the CPUs measured than XLA's own (Eigen)
# code: restricted to dot products, the DFT step of the demo's VGG ran 1.65x faster.
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# A program that runs once (a random initialisation) compiles with LLVM at -O1: the
# unrolled threefry rounds of every initialiser took XLA's default -O3 8.2 s to compile
# for the demo's VGG, -O1 1.8 s, to the same bits and as fast to run (vgg16 at 64x64:
# 6.8 s -> 2.4 s).
_CPU_RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": "1"}


def compiler_options(*, run_once: bool = False) -> dict[str, str] | None:
  """Options for ``jax.jit(..., compiler_options=...)`` on the default backend;
  ``run_once`` for a program called once, whose compile time is all it costs.

  Example::

    step = jax.jit(update_step, compiler_options=compiler_options())
    init = jax.jit(module.init, compiler_options=compiler_options(run_once=True))
  """
  if jax.default_backend() != "cpu":
    return None
  return {**_CPU_COMPILER_OPTIONS, **(_CPU_RUN_ONCE_OPTIONS if run_once else {})}
