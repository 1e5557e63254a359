"""Datasets (TFDS builders prepared offline into ArrayRecord) and the grain input pipeline."""

from dfm.data.batching import Batch
from dfm.data.batching import to_batch
from dfm.data.digits import IMAGE_SHAPE
from dfm.data.digits import NUM_CLASSES
from dfm.data.digits import Mnist5k
from dfm.data.digits import SPLIT_SEED
from dfm.data.digits import UciDigits
from dfm.data.digits import stratified_split
from dfm.data.digits import uci_to_mnist_frame
from dfm.data.faces import IMAGE_SIZES
from dfm.data.faces import FaceConfig
from dfm.data.faces import fold_splits
from dfm.data.faces import resize_face
from dfm.data.faces import stratified_folds
from dfm.data.lfw_subset import LfwSubset
from dfm.data.pipeline import iterate_eval_batches
from dfm.data.pipeline import make_train_loader
from dfm.data.pipeline import measure_throughput
from dfm.data.pipeline import num_batches
from dfm.data.pipeline import num_classes_of
from dfm.data.pipeline import open_split
from dfm.data.preparation import BUILDERS
from dfm.data.preparation import get_builder
from dfm.data.preparation import parse_name
from dfm.data.preparation import prepare
from dfm.data.summary import summarize
