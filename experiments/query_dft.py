r"""Query-only DFT: learn the noise of a model that can only be scored.

  python -m experiments.query_dft --config=configs/query.py:gender_v1 \
      --workdir=runs/query/gender_v1 --config.budget.queries=100000

The model is a black box (`config.black_box.kind`): `jax` (a classifier checkpoint
seen only through its scores), `onnx` (a file run by onnxruntime) or `http` (a
KServe V2 server). Writes into the workdir: config.json, checkpoints/,
metrics.jsonl, queries.csv and queries.png (validation accuracy against queries
spent), noise.npy, noise.png, metrics.json (before/after on validation and test,
and the query ledger) and report.md. Starting the same command again resumes from
the last checkpoint, and the query count with it.
"""
from dfm.run.query_dft import query_dft
from experiments.cli import launch

if __name__ == "__main__":
  launch(query_dft)
