"""Schemathesis against a live coordinator's own `/openapi.json`, without and with the
admin token: every operation, requests drawn from the schema (valid and not), and no
answer is a server error or breaks the schema it documents. Bounded for the suite
(derandomized, a few dozen cases per operation); the coordinator holds a device and a
result, so reads that find something are exercised as well as those that do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.result import Ok

from tests.conftest import (
    ADMIN_TOKEN,
    Coordinator,
    enroll_agent,
    start_agent,
    start_coordinator,
    stop,
)

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Coordinator]:
    home = tmp_path_factory.mktemp("openapi")
    coord = start_coordinator(home / "coordinator")
    agent_home = home / "agent"
    enroll_agent(coord, agent_home, "fuzzed-pi")
    agent = start_agent(agent_home)
    try:
        done = coord.cli("jobs", "submit", "--model", str(tiny_model), "-p", "8", "-n", "4",
                         "-r", "1", "--wait", "--timeout", "120")  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        stop(agent)  # the fuzzing that follows must not race a live agent's runs
    yield coord
    stop(coord.process)


def _operations(live: Coordinator) -> list[Any]:
    schema = schemathesis.openapi.from_url(live.http + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the schema itself is sound
        operations.append(result.ok())
    assert len(operations) > 20  # every route the API documents
    return operations


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @BOUNDED
    def each(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, headers=headers)

    each()


# (pytest 9 broke Schemathesis's pytest plugin, so the cases are drawn here, per operation)
@pytest.mark.parametrize("who", ["outsider", "admin"])
def test_every_operation_answers_within_its_schema(live: Coordinator, who: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if who == "admin" else {}
    for operation in _operations(live):
        _fuzz(operation, headers)
    assert httpx.get(live.http + "/api/v1/devices", timeout=10).status_code == 200
