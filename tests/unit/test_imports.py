"""The parts stand apart (docs/architecture.md): an agent and the CLI's client commands
run without the web framework or the ORM, and the coordinator never imports the agent."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "edgebench"
# The HTTP API's models: plain pydantic, shared by the server and the CLI's client.
CONTRACT = {"edgebench.dashboard", "edgebench.dashboard.models"}
SERVER_ONLY = ("fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic", "uvicorn", "jinja2")


def _loaded_after(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | "
        "{m for m in sys.modules if m.startswith('edgebench.')})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "modules",
    [
        # (an engine's own imports are its business: llama-cpp-python imports jinja2 for
        # its chat templates; backends are imported only to run)
        ("edgebench.agent.session", "edgebench.agent.runner", "edgebench.agent.enroll",
         "edgebench.agent.isolation", "edgebench.agent.sensors", "edgebench.cli.agent"),
        ("edgebench.cli.main", "edgebench.cli.jobs", "edgebench.cli.devices",
         "edgebench.cli.results", "edgebench.cli.client"),
    ],
    ids=["agent", "cli"],
)  # fmt: skip
def test_agent_and_cli_client_need_no_server_packages(modules: tuple[str, ...]) -> None:
    loaded = _loaded_after(*modules)
    assert not loaded & set(SERVER_ONLY), sorted(loaded & set(SERVER_ONLY))
    server_side = {
        m for m in loaded if m.startswith(("edgebench.coordinator", "edgebench.dashboard"))
    }
    assert server_side <= CONTRACT, sorted(server_side - CONTRACT)


def test_the_coordinator_never_loads_the_agent() -> None:
    loaded = _loaded_after("edgebench.coordinator.server", "edgebench.dashboard.app")
    assert not any(m.startswith("edgebench.agent") for m in loaded)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize(
    ("part", "forbidden"),
    [
        ("coordinator", ("edgebench.agent", "edgebench.cli")),
        ("dashboard", ("edgebench.agent", "edgebench.cli")),
        ("agent", ("edgebench.coordinator", "edgebench.dashboard", "edgebench.cli")),
        ("measure", ("edgebench.agent", "edgebench.coordinator", "edgebench.dashboard")),
    ],
)
def test_no_part_names_a_forbidden_one_anywhere(part: str, forbidden: tuple[str, ...]) -> None:
    """Also imports inside functions, which the runtime check above cannot see."""
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / part).rglob("*.py")
        for name in _imports(path)
        if name.startswith(forbidden)
    ]
    assert not found


def test_neutral_modules_import_no_part() -> None:
    neutral = ["engines.py", "workload.py", "protocol.py", "errors.py", "paths.py"]
    parts = ("edgebench.agent", "edgebench.coordinator", "edgebench.dashboard", "edgebench.cli")
    found = [f"{n}: {i}" for n in neutral for i in _imports(ROOT / n) if i.startswith(parts)]
    assert not found


def test_the_api_models_are_plain_pydantic() -> None:
    imported = _imports(ROOT / "dashboard" / "models.py") + _imports(
        ROOT / "dashboard" / "__init__.py"
    )
    assert not [name for name in imported if name.startswith(SERVER_ONLY)]
    assert not [name for name in imported if name.startswith("edgebench.coordinator")]
