"""XLA compiler options that every jitted function of dfm compiles with."""
import jax

# On CPU, XLA's YNNPACK library by default also takes convolutions wider than 16
# channels and reductions, both slower on the CPUs measured than XLA's own (Eigen)
# code: restricted to dot products, the DFT step of the demo's VGG ran 1.65x faster.
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options() -> dict[str, str] | None:
  """Options for ``jax.jit(..., compiler_options=...)`` on the default backend.

  Example::

    step = jax.jit(update_step, compiler_options=compiler_options())
  """
  return dict(_CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None
