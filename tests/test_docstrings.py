"""Every ``Example::`` in the docstrings of the pure core runs as written.

Each block runs with what a reader has after ``import dfm`` (the names of
``dfm.__all__``) and the module's own names, ``jax``, ``jnp``, ``np`` and ``optax``,
and small stand-ins for what an example takes as given (:func:`given`: ``apply_fn``,
``params``, ``x``, ``y``, ``batch``, ``state``, ``noise``, ``objective``, ``opt``).
A statement that is an expression, commented with a Python literal (``# 1.0``,
``# [0.1]``, ``# True``, or a literal after a last ``=``), must have that value (to
3 decimals), or that shape when its value is an array of another shape.
"""
import ast
import importlib
import inspect
import io
import textwrap
import tokenize

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dfm

CORE = ("transform", "losses", "dft", "estimators", "optim", "parallel", "types")
NO_CLAIM = object()


def example_blocks(docstring: str) -> list[str]:
  """The code of each ``Example::`` block: the lines indented below it, dedented."""
  blocks, lines = [], docstring.splitlines()
  for start, line in enumerate(lines):
    if line.strip() != "Example::":
      continue
    indent = len(line) - len(line.lstrip())
    block = []
    for body in lines[start + 1:]:
      if body.strip() and len(body) - len(body.lstrip()) <= indent:
        break
      block.append(body)
    blocks.append(textwrap.dedent("\n".join(block)).strip("\n"))
  return blocks


def core_examples() -> list:
  """``pytest.param(module, code)`` of every example of the core, named module.function."""
  examples = []
  for name in CORE:
    module = importlib.import_module(f"dfm.{name}")
    for node in ast.walk(ast.parse(inspect.getsource(module))):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
        for index, code in enumerate(example_blocks(ast.get_docstring(node) or "")):
          label = f"{name}.{getattr(node, 'name', '<module>')}" + (f"#{index}" if index else "")
          examples.append(pytest.param(module, code, id=label))
  return examples


EXAMPLES = core_examples()


def given(example: str) -> dict:
  """What an example takes as given: a linear classifier of 28x28 digits and its data."""
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(scale=0.03, size=(28 * 28, 10)), jnp.float32),
            "b": jnp.zeros(10)}

  def apply_fn(params, images):
    return images.reshape(images.shape[0], -1) @ params["w"] + params["b"]

  x = jnp.asarray(rng.uniform(size=(8, 28, 28, 1)), jnp.float32)  # 8: any device count to 8.
  y = jnp.arange(8) % 10
  opt = optax.adam(1e-2)
  # The state of the optimizer the example then updates it with.
  state_optimizer = optax.sgd(0.1) if example == "dft.apply_noise_update" else opt
  return {"apply_fn": apply_fn, "params": params, "x": x, "y": y,
          "batch": {"image": x, "label": y}, "opt": opt,
          "state": dfm.init_state(jnp.zeros((28, 28, 1)), state_optimizer),
          "noise": jnp.zeros((7, 7, 1)),
          "objective": lambda noises: jnp.sum(noises ** 2, axis=(1, 2, 3))}


def claimed_value(comment: str | None):
  """The literal a comment states (``1.0``, ``(0.1 + 0.7) / 2 = 0.4``), else NO_CLAIM."""
  if comment is None:
    return NO_CLAIM
  for text in (comment, comment.rsplit("=", 1)[-1]):
    try:
      return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      continue
  return NO_CLAIM


def check_claim(value, claim) -> None:
  if isinstance(claim, bool):
    assert value is claim or bool(value) == claim
    return
  if hasattr(value, "shape") and np.shape(value) != np.shape(claim):
    assert tuple(value.shape) == tuple(claim)  # The comment gives the shape.
    return
  np.testing.assert_allclose(np.asarray(value, np.float64), np.asarray(claim, np.float64),
                             rtol=1e-3, atol=5e-4)


def claims(code: str) -> dict[int, object]:
  """``{line: value}`` of the expression statements whose comment states a value."""
  comments = {token.start[0]: token.string.lstrip("#").strip()
              for token in tokenize.generate_tokens(io.StringIO(code).readline)
              if token.type == tokenize.COMMENT}
  stated = {}
  for statement in ast.parse(code).body:
    claim = claimed_value(comments.get(statement.end_lineno))
    if isinstance(statement, ast.Expr) and claim is not NO_CLAIM:
      stated[statement.end_lineno] = claim
  return stated


def run_example(code: str, namespace: dict) -> None:
  """Runs ``code`` statement by statement, checking the values its comments state."""
  stated = claims(code)
  for statement in ast.parse(code).body:
    if isinstance(statement, ast.Expr):
      value = eval(compile(ast.Expression(statement.value), "<example>", "eval"),  # pylint: disable=eval-used
                   namespace)
      if statement.end_lineno in stated:
        claim = stated[statement.end_lineno]
        try:
          check_claim(value, claim)
        except AssertionError as error:
          shown = f"of shape {np.shape(value)}" if np.ndim(value) > 1 else repr(value)
          raise AssertionError(f"{ast.get_source_segment(code, statement)} is {shown}; its "
                               f"comment says {claim!r}") from error
    else:
      exec(compile(ast.Module([statement], []), "<example>", "exec"), namespace)  # pylint: disable=exec-used


def test_the_core_has_examples_and_each_is_found():
  ids = [example.id for example in EXAMPLES]
  written = sum(inspect.getsource(importlib.import_module(f"dfm.{name}")).count("Example::")
                for name in CORE)
  assert len(ids) == len(set(ids)) == written
  assert {"losses.true_class_hinge", "dft.make_update_step", "types.<module>",
          "estimators.<module>", "parallel.pmap_step"} <= set(ids)
  # Values stated in comments, which the examples are checked against.
  assert sum(len(claims(example.values[1])) for example in EXAMPLES) >= 10


def test_example_blocks_end_where_the_indentation_does():
  docstring = "Adds.\n\nExample::\n\n  y = 1\n\n  z = y + 1\n\nArgs:\n  a: b.\n"
  assert example_blocks(docstring) == ["y = 1\n\nz = y + 1"]
  assert claimed_value("(0.1 + 0.7) / 2 = 0.4") == 0.4
  assert claimed_value("[4, 7, 7, 1]") == [4, 7, 7, 1] and claimed_value("log(4)") is NO_CLAIM
  assert claims("a = 1  # 2\na + 1  # 2\na  # one") == {2: 2}


@pytest.mark.parametrize("module, code", EXAMPLES)
def test_example_runs_as_written(request, module, code):
  namespace = {name: getattr(dfm, name) for name in dfm.__all__}
  namespace.update(vars(module))
  namespace.update(jax=jax, jnp=jnp, np=np, optax=optax)
  namespace.update(given(request.node.callspec.id))
  run_example(code, namespace)
