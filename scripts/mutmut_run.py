"""Mutation testing with mutmut (>= 3.3), one module at a time, each against its narrowest tests.

mutmut rewrites every function of the mutated module into a trampoline that runs the original or
one of its mutants, runs the selected test files once to learn which tests call which function,
then runs, for each mutant, only the tests that reach its function (stopping at the first failure).
mutmut itself has one test selection for the whole run (``[tool.mutmut]`` in ``pyproject.toml``);
this script gives each module its own, from ``TARGETS`` below, so that the one full pass of the
selection before the mutants stays short.

Each module runs in its own scratch copy of ``src/``, ``tests/`` and ``pyproject.toml`` (mutmut
writes its ``mutants/`` folder there), so the working tree is never touched.

Usage::

    python scripts/mutmut_run.py --list                           # the modules and their tests
    python scripts/mutmut_run.py --module methods/chain.py        # one module (repeatable)
    python scripts/mutmut_run.py                                  # every module in TARGETS (hours)
    python scripts/mutmut_run.py --module methods/chain.py --keep /tmp/mm --json chain.json
    # after adding tests: the listed mutants again, in the kept scratch copy (tests refreshed)
    python scripts/mutmut_run.py --module methods/chain.py --keep /tmp/mm --rerun chain.json
    python scripts/mutmut_run.py --module methods/flow.py --keep /tmp/mm --rerun flow.json --select 'layered_graph'

Per module it prints the counts (killed, survived, timeout, suspicious, skipped, no tests, ...),
the wall time, the load average seen during the run (``/proc/loadavg`` every 10 s) and each
survivor's diff (``mutmut show``). mutmut runs under ``nice -n 19`` with one worker
(``--max-children``, default 1) and one BLAS/OpenMP thread.

mutmut does not mutate decorated functions (other than ``staticmethod`` / ``classmethod``): the
numba kernels of ``methods/_flow_kernel.py`` (``@_compiled``), ``capture.py``'s
``@contextlib.contextmanager`` functions and ``@property`` methods are left as they are.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/hf_vit_rollout"

#: Module (relative to the package) -> the narrowest test files that exercise it.
TARGETS: dict[str, list[str]] = {
    "methods/chain.py": ["tests/test_methods.py", "tests/test_properties.py", "tests/test_layer_choices.py",
                         "tests/test_windows.py"],
    "methods/flow.py": ["tests/test_flow.py", "tests/test_properties.py"],
    "methods/gradient.py": ["tests/test_methods.py", "tests/test_properties.py", "tests/test_references.py"],
    "methods/rollout.py": ["tests/test_methods.py", "tests/test_properties.py", "tests/test_references.py"],
    "lrp/rules.py": ["tests/test_lrp.py", "tests/test_transformer_attribution.py", "tests/test_cp_lrp.py",
                     "tests/test_libragrad.py", "tests/test_references.py"],
    "methods/attribution.py": ["tests/test_methods.py", "tests/test_transformer_attribution.py",
                               "tests/test_references.py"],
    "methods/legrad.py": ["tests/test_methods.py", "tests/test_legrad.py", "tests/test_references.py"],
    "methods/layers.py": ["tests/test_layer_choices.py", "tests/test_methods.py"],
    "methods/attention.py": ["tests/test_layer_choices.py", "tests/test_explainer.py", "tests/test_methods.py"],
    "methods/_flow_kernel.py": ["tests/test_flow.py"],
    "stages.py": ["tests/test_explainer.py", "tests/test_references.py", "tests/test_lrp_explainer.py",
                  "tests/test_legrad.py", "tests/test_reliability.py"],
    "capture.py": ["tests/test_explainer.py", "tests/test_reliability.py", "tests/test_concurrency.py",
                   "tests/test_lrp.py", "tests/test_window_capture.py"],
}

#: mutmut's exit-code classes, in the order they are printed.
STATUSES = ["killed", "survived", "timeout", "suspicious", "skipped", "no tests", "segfault",
            "caught by type check", "not checked", "check was interrupted by user"]


#: A pytest plugin written next to the scratch copy: one torch thread for every test, set after
#: ``tests/conftest.py`` asks for two. mutmut forks each mutant's run from a process that has
#: imported (and may have run) torch; a child forked after libgomp started its thread team waits
#: for that team for ever (seen: ``gomp_team_barrier_wait_end`` in ``softmax``, 0 s of CPU).
PLUGIN = """\
import torch


def pytest_sessionstart(session):
    torch.set_num_threads(1)
"""


def _mutmut_table(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` table for one module: the project's settings, with this module and
    these tests."""
    base = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("mutmut", {})
    base.pop("paths_to_mutate", None)
    base["source_paths"] = ["src"]
    base["only_mutate"] = [f"{PACKAGE}/{module}"]
    base["pytest_add_cli_args_test_selection"] = list(tests)
    base["pytest_add_cli_args"] = list(base.get("pytest_add_cli_args", [])) + ["-p", "_mutmut_one_thread"]
    base.pop("tests_dir", None)
    lines = ["[tool.mutmut]"]
    for key, value in base.items():
        lines.append(f"{key} = {json.dumps(value)}")  # strings, lists, numbers, booleans: TOML = JSON here
    return "\n".join(lines) + "\n"


def _pyproject_for(module: str, tests: list[str]) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    # drop the project's own [tool.mutmut] table (up to the next table header)
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    return text.rstrip() + "\n\n" + _mutmut_table(module, tests)


def _prepare(scratch: Path, module: str, tests: list[str], fresh: bool) -> None:
    if fresh and scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if fresh:
        shutil.copytree(ROOT / "src", scratch / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # tests are refreshed on a rerun (mutmut copies them on into mutants/tests itself)
    if (scratch / "tests").exists():
        shutil.rmtree(scratch / "tests")
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "pyproject.toml").write_text(_pyproject_for(module, tests))
    (scratch / "_plugins").mkdir(exist_ok=True)  # not the scratch root: mutmut drops "." from sys.path
    (scratch / "_plugins" / "_mutmut_one_thread.py").write_text(PLUGIN)


def _environment(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str((scratch / "_plugins").resolve())  # mutmut puts mutants/src first itself
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return env


class _Load:
    """The 1-minute load average, read every ``every`` seconds while a run lasts."""

    def __init__(self, every: float = 10.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every):
        while True:
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if self._stop.wait(every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _results(scratch: Path, env) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=scratch, env=env,
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            found[name] = status
    return found


def _show(scratch: Path, env, name: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=scratch, env=env,
                          capture_output=True, text=True).stdout


def run_module(module: str, scratch: Path, *, max_children: int, rerun: list[str] | None, log) -> dict:
    tests = TARGETS[module]
    _prepare(scratch, module, tests, fresh=rerun is None)
    env = _environment(scratch)
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    command += rerun or []
    started = time.monotonic()
    with _Load() as load, open(scratch / "mutmut.log", "w") as out:
        code = subprocess.run(command, cwd=scratch, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    if code != 0:
        tail = (scratch / "mutmut.log").read_text()[-4000:]
        raise SystemExit(f"mutmut failed on {module} (exit {code}); the end of its log:\n{tail}")
    results = _results(scratch, env)
    if rerun:
        results = {name: results[name] for name in rerun if name in results}
    counts = collections.Counter(results.values())
    survivors = {name: _show(scratch, env, name) for name, status in sorted(results.items())
                 if status in ("survived", "suspicious", "no tests", "timeout")}
    report = {"module": module, "tests": tests, "command": "nice -n 19 python " + " ".join(command[4:]), "seconds": round(seconds, 1),
              "load_min": min(load.samples), "load_max": max(load.samples),
              "load_mean": round(sum(load.samples) / len(load.samples), 2),
              "counts": {status: counts[status] for status in STATUSES if counts[status]},
              "results": results, "diffs": survivors}
    log(f"== {module}: {len(results)} mutants in {seconds / 60:.1f} min "
        f"(load {report['load_min']:.1f}-{report['load_max']:.1f}, mean {report['load_mean']:.1f})")
    log("   " + ", ".join(f"{status} {n}" for status, n in report["counts"].items()))
    for name, diff in survivors.items():
        log(diff.rstrip())
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="a module (repeatable)")
    parser.add_argument("--list", action="store_true", help="the modules and their tests; run nothing")
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write every result (status, diffs, times) to this file")
    parser.add_argument("--rerun", type=Path,
                        help="a --json file of an earlier run: its survivors (and untested mutants) again, in the --keep folder")
    parser.add_argument("--select", help="with --rerun: only the survivors whose name matches this regex")
    parser.add_argument("--max-children", type=int, default=1)
    args = parser.parse_args(argv)
    modules = args.module or list(TARGETS)
    if args.list:
        for module in modules:
            print(f"{module}: {' '.join(TARGETS[module])}")
        return 0
    if args.rerun and not args.keep:
        parser.error("--rerun needs the --keep folder of the earlier run")
    earlier = {r["module"]: r for r in json.loads(args.rerun.read_text())} if args.rerun else {}
    base = args.keep or Path(tempfile.mkdtemp(prefix="mutmut-"))
    reports = []
    try:
        for module in modules:
            rerun = None
            if args.rerun:
                rerun = [n for n, s in earlier[module]["results"].items() if s in ("survived", "suspicious", "timeout", "no tests")
                         and (not args.select or re.search(args.select, n))]
                if not rerun:
                    print(f"== {module}: nothing to run again")
                    continue
            scratch = base / module.replace("/", "_").removesuffix(".py")
            reports.append(run_module(module, scratch, max_children=args.max_children, rerun=rerun,
                                      log=lambda line: print(line, flush=True)))
            if args.json:
                args.json.write_text(json.dumps(reports, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
