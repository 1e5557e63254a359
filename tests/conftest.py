"""Test set-up: simulate 4 CPU devices before anything else touches JAX."""
import jax

jax.config.update("jax_num_cpu_devices", 4)
