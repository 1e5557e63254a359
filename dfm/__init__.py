"""dfm: Data Fine-tuning in JAX.

Learn one universal perturbation for a dataset so that a frozen classifier becomes
more accurate on it, while the images look the same (Chhabra et al., AAAI 2019).
The pure core needs only ``apply_fn(params, images) -> logits``; its query-only
twin needs only a model that can be scored (``dfm.black_box.BlackBox``).

The names below are the pure core: no Flax, no IO. The rest lives in rooms
above it: ``dfm.models``, ``dfm.data``, ``dfm.report``, ``dfm.black_box``,
``dfm.query``, ``dfm.run`` and ``dfm.studies``.
"""
from dfm.dft import apply_noise_update
from dfm.dft import init_stacked_state
from dfm.dft import init_state
from dfm.dft import make_loss_fn
from dfm.dft import make_stacked_update_step
from dfm.dft import make_update_step
from dfm.dft import noise_norms
from dfm.dft import perturb_with_distance
from dfm.estimators import estimate_gradient
from dfm.losses import CLASS_TERMS
from dfm.losses import accuracy
from dfm.losses import appearance_distance
from dfm.losses import class_term_per_image
from dfm.losses import dft_objective
from dfm.losses import get_class_term
from dfm.losses import hinge_per_image
from dfm.losses import softmax_xent
from dfm.losses import squared_distance_per_image
from dfm.losses import true_class_hinge
from dfm.losses import weighted_mean
from dfm.losses import xent_per_image
from dfm.parallel import data_mesh
from dfm.parallel import jit_step
from dfm.parallel import place
from dfm.parallel import pmap_step
from dfm.parallel import sharded_jit_step
from dfm.transform import TRANSFORMS
from dfm.transform import get_transform
from dfm.transform import perturb
from dfm.transform import resize_noise
from dfm.types import Batch
from dfm.types import NoiseState
from dfm.types import QueryState

__all__ = [
    "CLASS_TERMS", "TRANSFORMS", "Batch", "NoiseState", "QueryState", "accuracy",
    "appearance_distance", "apply_noise_update", "class_term_per_image", "data_mesh",
    "dft_objective", "estimate_gradient", "get_class_term", "get_transform", "hinge_per_image",
    "init_stacked_state", "init_state", "jit_step", "make_loss_fn", "make_stacked_update_step",
    "make_update_step", "noise_norms", "perturb",
    "perturb_with_distance", "place", "pmap_step", "resize_noise", "sharded_jit_step",
    "softmax_xent", "squared_distance_per_image", "true_class_hinge", "weighted_mean",
    "xent_per_image",
]
