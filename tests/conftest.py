"""Test set-up: simulate 4 CPU devices before anything else touches JAX."""
import jax
import pytest

jax.config.update("jax_num_cpu_devices", 4)

from dfm import data  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """Both embedded datasets prepared once, into a temporary directory."""
  root = str(tmp_path_factory.mktemp("data"))
  for name in ("mnist5k", "uci_digits"):
    data.prepare(name, root)
  return root
