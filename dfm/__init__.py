"""dfm: Data Fine-tuning in JAX.

Learn one universal perturbation for a dataset so that a frozen classifier becomes
more accurate on it, while the images look the same (Chhabra et al., AAAI 2019).
The pure core needs only ``apply_fn(params, images) -> logits``; its query-only
twin needs only a model that can be scored (``dfm.black_box.BlackBox``).
"""
from dfm.dft import init_state
from dfm.dft import make_loss_fn
from dfm.dft import make_update_step
from dfm.losses import accuracy
from dfm.estimators import estimate_gradient
from dfm.losses import appearance_distance
from dfm.losses import class_term_per_image
from dfm.losses import dft_objective
from dfm.losses import softmax_xent
from dfm.losses import squared_distance_per_image
from dfm.losses import true_class_hinge
from dfm.losses import weighted_mean
from dfm.parallel import data_mesh
from dfm.parallel import jit_step
from dfm.parallel import pmap_step
from dfm.parallel import sharded_jit_step
from dfm.query_dft import init_query_state
from dfm.query_dft import make_query_step
from dfm.transform import perturb
from dfm.transform import resize_noise

__all__ = [
    "accuracy", "appearance_distance", "class_term_per_image", "data_mesh", "dft_objective",
    "estimate_gradient", "init_query_state", "init_state", "jit_step", "make_loss_fn",
    "make_query_step", "make_update_step", "perturb", "pmap_step", "resize_noise",
    "sharded_jit_step", "softmax_xent", "squared_distance_per_image", "true_class_hinge",
    "weighted_mean",
]
