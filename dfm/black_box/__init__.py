"""Models that can only be scored: ``model.score(images) -> Reply(probabilities, spent)``.

The adapters (a JAX ``apply_fn``, an ONNX file, a KServe V2 server) share
:class:`BlackBox`; :func:`from_config` builds the one ``config.black_box`` names.
The Open Inference Protocol codec is :mod:`dfm.black_box.protocol`, and a local
server of an ONNX file for tests is :mod:`dfm.black_box.local_server`.

Example::

  model = dfm.black_box.from_config(config)
  reply = model.score(images)   # reply.probabilities [N, K], reply.spent: Spent
"""
from dfm.black_box.base import COUNTS
from dfm.black_box.base import BlackBox
from dfm.black_box.base import JaxBlackBox
from dfm.black_box.base import Reply
from dfm.black_box.base import Spent
from dfm.black_box.base import TopKBlackBox
from dfm.black_box.base import add_spent
from dfm.black_box.base import check_probabilities
from dfm.black_box.base import fill_unknown
from dfm.black_box.base import known_true_class_probability
from dfm.black_box.base import ledger_arrays
from dfm.black_box.base import ledger_ints
from dfm.black_box.base import scatter_top_k
from dfm.black_box.base import spent_of
from dfm.black_box.base import with_spent
from dfm.black_box.factory import BLACK_BOX_KINDS
from dfm.black_box.factory import from_config
from dfm.black_box.http_client import BlackBoxUnavailable
from dfm.black_box.http_client import HttpBlackBox
from dfm.black_box.http_client import read_api_key
from dfm.models.input_spec import InputSpec
from dfm.black_box.onnx_file import OnnxBlackBox
from dfm.models.model_files import resolve_model_path
from dfm.models.input_spec import OUTPUT_KINDS
from dfm.black_box.shapes import BLACK_BOX_OUTPUT_KINDS
from dfm.black_box.shapes import softmax

__all__ = [
    "BLACK_BOX_KINDS", "BLACK_BOX_OUTPUT_KINDS", "COUNTS", "OUTPUT_KINDS", "BlackBox",
    "BlackBoxUnavailable", "HttpBlackBox", "InputSpec", "JaxBlackBox", "OnnxBlackBox", "Reply",
    "Spent", "TopKBlackBox", "add_spent", "check_probabilities", "fill_unknown", "from_config",
    "known_true_class_probability", "ledger_arrays", "ledger_ints", "read_api_key",
    "resolve_model_path", "scatter_top_k", "softmax", "spent_of", "with_spent",
]
