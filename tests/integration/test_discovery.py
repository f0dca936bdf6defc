"""Discovery over mDNS on 127.0.0.1 only: a coordinator serving --advertise is found by
`agent enroll --discover` and `agent run --discover`; an advertisement whose CA
fingerprint is not the token's is passed over; one without TLS needs --insecure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebench.discovery import Advertisement
from tests.conftest import Coordinator, run_cli, start_agent, start_coordinator, stop, wait_until

pytestmark = pytest.mark.slow
LOOPBACK = ("--mdns-interface", "127.0.0.1")


@pytest.fixture
def advertised(tmp_path: Path) -> Iterator[Coordinator]:
    coord = start_coordinator(tmp_path / "coordinator", "--advertise",
                              "--advertise-name", "bench-a")  # fmt: skip
    impostor = Advertisement("impostor", "127.0.0.1", 9, "ab" * 32)  # wrong CA, dead port
    yield coord
    impostor.close()
    stop(coord.process)


def _token(coord: Coordinator) -> str:
    made = coord.cli("coordinator", "token", "create")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_an_agent_finds_the_coordinator_it_trusts_and_passes_over_others(
    advertised: Coordinator, tmp_path: Path
) -> None:
    home = tmp_path / "pi"
    named = run_cli(home, "agent", "enroll", "--token", _token(advertised), "--discover",
                    "--discover-name", "impostor", *LOOPBACK)  # fmt: skip
    assert named.returncode == 1
    assert "no edgebench coordinator named 'impostor' that this agent may trust" in named.stderr
    assert "its CA fingerprint is not the one this agent trusts" in named.stderr
    enrolled = run_cli(home, "agent", "enroll", "--token", _token(advertised), "--discover",
                       *LOOPBACK, "--name", "found-pi")  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    port = advertised.grpc.rsplit(":", 1)[1]
    assert f"found coordinator bench-a at 127.0.0.1:{port}" in enrolled.stderr
    both = run_cli(home, "agent", "enroll", "--token", "t", "--discover", "--coordinator", "x:1")
    assert both.returncode == 2 and "not both" in both.stderr
    agent = start_agent(home, "--discover", "--discover-name", "bench-a", *LOOPBACK)
    try:
        wait_until(lambda: any(d["online"] for d in advertised.api("/api/v1/devices")),
                   what="the discovering agent online")  # fmt: skip
    finally:
        stop(agent)
    assert "found coordinator bench-a" in (home / "agent.log").read_text()


def test_a_plaintext_advertisement_needs_insecure(tmp_path: Path) -> None:
    coord = start_coordinator(tmp_path / "coordinator", "--insecure", "--advertise",
                              "--advertise-name", "plain")  # fmt: skip
    try:
        home = tmp_path / "pi"
        refused = run_cli(home, "agent", "enroll", "--token", _token(coord), "--discover",
                          *LOOPBACK)  # fmt: skip
        assert refused.returncode == 1 and "serves plaintext (--insecure to take it)" in (
            refused.stderr
        )
        taken = run_cli(home, "agent", "enroll", "--token", _token(coord), "--discover",
                        *LOOPBACK, "--insecure")  # fmt: skip
        assert taken.returncode == 0, taken.stderr
    finally:
        stop(coord.process)
