"""Mutation testing of the explanation math and the model-touching code.

Each mutant is one small change to one line of the package (an operator swapped, a comparison
loosened, a constant moved, a boolean flipped, a ``not`` or a minus sign dropped). The module's
narrowest relevant test files run against it; a mutant is *killed* when they fail (or run past the
time limit), *survives* when they pass. Survivors are the places where a bug would go unnoticed.

The package is copied to a scratch folder and mutated there (the working tree is never touched).
Heavy imports (torch, transformers, ...) are loaded once; each mutant runs ``pytest`` in a forked
child, so a mutant costs its tests' time plus about a second.

Usage::

    python scripts/mutation.py                       # every target module (long: see docs/testing.md)
    python scripts/mutation.py --module methods/gradient.py --module lrp/rules.py
    python scripts/mutation.py --list                # the mutants, without running anything
    python scripts/mutation.py --out mutation.json   # also write every result as JSON
    python scripts/mutation.py --survivors mutation.json   # only the earlier run's survivors again
    python scripts/mutation.py --survivors mutation.json --status timeout --timeout 300

Error messages, log calls, docstrings and annotations are not mutated: a change there cannot move a map.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "hf_vit_rollout"

#: Module (relative to the package) -> its narrowest relevant tests, fastest first (pytest stops at
#: the first failure).
TARGETS: dict[str, list[str]] = {
    "methods/rollout.py": ["tests/test_methods.py", "tests/test_properties.py", "tests/test_references.py"],
    "methods/gradient.py": ["tests/test_methods.py", "tests/test_properties.py", "tests/test_references.py"],
    "methods/attribution.py": ["tests/test_methods.py", "tests/test_transformer_attribution.py", "tests/test_references.py"],
    "methods/chain.py": ["tests/test_methods.py", "tests/test_layer_choices.py", "tests/test_references.py"],
    "methods/attention.py": ["tests/test_layer_choices.py", "tests/test_explainer.py"],
    "methods/layers.py": ["tests/test_layer_choices.py", "tests/test_methods.py"],
    "methods/legrad.py": ["tests/test_methods.py", "tests/test_references.py", "tests/test_legrad.py"],
    "methods/flow.py": ["tests/test_flow.py", "tests/test_properties.py"],
    "methods/_flow_kernel.py": ["tests/test_flow.py"],
    "lrp/rules.py": ["tests/test_references.py", "tests/test_lrp.py", "tests/test_transformer_attribution.py",
                     "tests/test_cp_lrp.py", "tests/test_libragrad.py"],
    "stages.py": ["tests/test_references.py", "tests/test_explainer.py", "tests/test_lrp_explainer.py",
                  "tests/test_text_targets.py", "tests/test_legrad.py", "tests/test_window_capture.py"],
    "capture.py": ["tests/test_explainer.py", "tests/test_references.py", "tests/test_lrp.py",
                   "tests/test_concurrency.py", "tests/test_window_capture.py"],
}

SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.And: ast.Or, ast.Or: ast.And,
}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
          ast.BitAnd: "&", ast.BitOr: "|", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
          ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.And: "and",
          ast.Or: "or"}


@dataclass
class Mutant:
    module: str
    line: int
    description: str
    site: int  # index of the node in the module's walk order
    variant: int  # which change at that node
    status: str = ""  # killed / survived / timeout
    seconds: float = 0.0


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes whose subtrees are not mutated: raises, f-strings, docstrings, annotations,
    logging and warnings calls, decorators."""
    skipped: set[int] = set()

    def skip(node):
        for sub in ast.walk(node):
            skipped.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Assert)):
            skip(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip(body[0])
            for decorator in getattr(node, "decorator_list", []):
                skip(decorator)
            if not isinstance(node, (ast.ClassDef, ast.Module)):
                if node.returns is not None:
                    skip(node.returns)
                for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                    if arg.annotation is not None:
                        skip(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("logger", "logging", "warnings"):
                skip(node)
    return skipped


def _variants(node: ast.AST) -> list[tuple[str, callable]]:
    """``[(description, apply(node))]`` for one node; ``apply`` mutates a copy of the node in place."""
    out = []
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAPS:
        new = SWAPS[type(node.op)]
        out.append((f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.BoolOp) and type(node.op) in SWAPS:
        new = SWAPS[type(node.op)]
        out.append((f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in SWAPS:
                new = SWAPS[type(op)]

                def apply(n, i=i, new=new):
                    n.ops[i] = new()

                out.append((f"{SYMBOL[type(op)]} -> {SYMBOL[new]}", apply))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append(("drop " + ("not" if isinstance(node.op, ast.Not) else "unary -"), "unwrap"))
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        value = node.value
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, int):
            new = value + 1
        else:
            new = value * 2 if value else 1.0
        out.append((f"{value!r} -> {new!r}", lambda n, new=new: setattr(n, "value", new)))
    return out


def mutants_of(module: str) -> list[Mutant]:
    tree = ast.parse((PACKAGE / module).read_text())
    skipped = _skipped_nodes(tree)
    found = []
    for site, node in enumerate(ast.walk(tree)):
        if id(node) in skipped:
            continue
        for variant, (description, _) in enumerate(_variants(node)):
            found.append(Mutant(module, getattr(node, "lineno", 0), description, site, variant))
    return found


class _Unwrap(ast.NodeTransformer):
    def __init__(self, target):
        self.target = target

    def generic_visit(self, node):
        node = super().generic_visit(node)
        return node

    def visit(self, node):
        if node is self.target:
            return node.operand
        return super().visit(node)


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((PACKAGE / mutant.module).read_text())
    node = list(ast.walk(tree))[mutant.site]
    description, apply = _variants(node)[mutant.variant]
    if apply == "unwrap":
        tree = _Unwrap(node).visit(tree)
    else:
        apply(node)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _preload() -> None:
    """Import the heavy dependencies once, before forking (the package itself is imported per mutant)."""
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401
    import torch
    import transformers  # noqa: F401

    torch.set_num_threads(2)
    try:
        import hypothesis  # noqa: F401
        import networkx  # noqa: F401
        import numba  # noqa: F401
    except ImportError:
        pass


def run_tests(tests: list[str], timeout: float, extra: list[str]) -> tuple[str, float]:
    """Run ``tests`` in a forked child against the scratch package; ``(status, seconds)``."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *extra])
        except BaseException:
            code = 3
        os._exit(int(code))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            seconds = time.monotonic() - start
            if code == 0:
                return "survived", seconds
            if code == 5:  # no tests collected: a broken selection, not a kill
                return "no tests", seconds
            return "killed", seconds
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", help="module under the package (default: all targets)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default: 3 × the clean run, at least 30)")
    parser.add_argument("--out", help="write every result to this JSON file")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to narrow the tests")
    parser.add_argument("--sample", type=int, help="run at most this many mutants per module, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample's draw")
    parser.add_argument("--survivors", help="run only the mutants that survived in this earlier --out file")
    parser.add_argument("--status", default="survived",
                        help="with --survivors: the earlier statuses to run again, comma-separated (e.g. survived,timeout)")
    args = parser.parse_args(argv)
    modules = args.module or list(TARGETS)
    for module in modules:
        if module not in TARGETS:
            parser.error(f"no tests are registered for {module!r}; known: {', '.join(TARGETS)}")
    mutants = {module: mutants_of(module) for module in modules}
    if args.survivors:
        earlier = {(m["module"], m["site"], m["variant"]) for m in json.loads(Path(args.survivors).read_text())
                   if m["status"] in args.status.split(",")}
        modules = [module for module in modules if any(e[0] == module for e in earlier)]
        mutants = {module: [m for m in mutants[module] if (module, m.site, m.variant) in earlier] for module in modules}
    if args.sample:
        import random

        draw = random.Random(args.seed)
        mutants = {module: sorted(draw.sample(found, min(args.sample, len(found))), key=lambda m: (m.line, m.site, m.variant))
                   for module, found in mutants.items()}
    if args.list:
        for module, found in mutants.items():
            for m in found:
                print(f"{module}:{m.line}: {m.description}")
        print(f"{sum(map(len, mutants.values()))} mutants", file=sys.stderr)
        return 0
    extra = ["-k", args.keyword] if args.keyword else []
    scratch = Path(tempfile.mkdtemp(prefix="mutation-"))
    results: list[Mutant] = []
    try:
        shutil.copytree(PACKAGE, scratch / "hf_vit_rollout", ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, str(scratch))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(scratch), os.environ.get("PYTHONPATH", "")])
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("MPLBACKEND", "Agg")
        os.chdir(ROOT)
        _preload()
        began = time.monotonic()
        for module, found in mutants.items():
            tests = TARGETS[module]
            status, clean = run_tests(tests, 3600, extra)
            if status != "survived":
                print(f"{module}: the tests fail without any mutation ({status}); skipped", flush=True)
                continue
            timeout = args.timeout or max(30.0, 3 * clean)
            print(f"{module}: {len(found)} mutants, clean run {clean:.1f} s, timeout {timeout:.0f} s", flush=True)
            path = scratch / "hf_vit_rollout" / module
            original = path.read_text()
            stamp = path.stat()
            for mutant in found:
                try:
                    path.write_text(mutated_source(mutant))
                    mutant.status, mutant.seconds = run_tests(tests, timeout, extra)
                finally:
                    path.write_text(original)
                    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # keeps numba's cache valid
                results.append(mutant)
                if args.out:  # after every mutant, so an interrupted run keeps what it measured
                    Path(args.out).write_text(json.dumps([asdict(m) for m in results], indent=1))
                if mutant.status == "survived":
                    print(f"  SURVIVED {module}:{mutant.line}: {mutant.description}", flush=True)
            counts = {s: sum(m.status == s for m in found) for s in ("killed", "timeout", "survived")}
            print(f"{module}: {counts}", flush=True)
        elapsed = time.monotonic() - began
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    survived = [m for m in results if m.status == "survived"]
    print(f"{len(results)} mutants in {elapsed / 60:.1f} min: {len(results) - len(survived)} killed, {len(survived)} survived")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
