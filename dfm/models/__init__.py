"""Frozen classifiers, turned once at the edge into ``apply_fn(params, images) -> logits``."""
from dfm.models.build import build_classifier
from dfm.models.build import count_params
from dfm.models.build import init_params
from dfm.models.build import make_apply_fn
from dfm.models.build import param_shapes
from dfm.models.foreign import FROZEN_KINDS
from dfm.models.foreign import load_frozen_classifier
from dfm.models.frozen import load_frozen_params
from dfm.models.training import output_layer
from dfm.models.training import reset_output_layer
from dfm.models.vgg import VGG
from dfm.models.vgg import max_pool_2x2
from dfm.types import ApplyFn

__all__ = ["FROZEN_KINDS", "VGG", "ApplyFn", "build_classifier", "count_params", "init_params",
           "load_frozen_classifier", "load_frozen_params", "make_apply_fn", "max_pool_2x2",
           "param_shapes"]
