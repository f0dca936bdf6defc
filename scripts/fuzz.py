"""Fuzz every RPC of a real coordinator's agent port and print the status codes it gave.

Usage: .venv/bin/python scripts/fuzz.py [--calls 100000] [--rpc Session ...]

Starts a coordinator of its own (a temporary home, SQLite, TLS as always), enrolls one
raw client, then makes `--calls` calls per RPC with messages from tests/fuzzing.py (any
message of the contract, plausible results with fields drawn anew, raw bytes, good and
bad credentials). Prints, per RPC, how many calls got each status; exits 1 if any got a
status outside tests.fuzzing.CLIENT_ERRORS, if the coordinator stopped answering, or if
its store or API broke (tests/integration/test_fuzz.py checks the same, bounded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgebench.proto.v1 import agent_pb2 as pb  # noqa: E402
from edgebench.proto.v1 import agent_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import start_coordinator, stop  # noqa: E402
from tests.fuzzing import CLIENT_ERRORS, agent_messages, garbage, messages  # noqa: E402
from tests.integration.test_fuzz import HEADER_TEXT, _code, _still_sound  # noqa: E402

RPCS = ("Enroll", "Session", "FetchArtifact", "RotateSecret", "garbage")


def _runner(calls: int, strategy: Any, call: Callable[[Any], Any], counts: Counter[str]) -> None:
    @settings(max_examples=calls, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def run(value: Any) -> None:
        counts[_code(lambda: call(value)).name] += 1

    run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per RPC")
    parser.add_argument("--rpc", action="append", choices=RPCS, help="only these (repeat)")
    args = parser.parse_args()
    coordinator = start_coordinator(Path(tempfile.mkdtemp(prefix="edgebench-fuzz-")))
    try:
        channel = coordinator.channel()
        stub = pb_grpc.AgentServiceStub(channel)
        reply = stub.Enroll(pb.EnrollRequest(token=coordinator.token_secret(), name="fuzzer"))
        meta = (("x-edgebench-agent-id", reply.agent_id),
                ("x-edgebench-agent-secret", reply.secret))  # fmt: skip
        hellos = st.builds(lambda h, rest: [pb.AgentMessage(hello=h), *rest],
                           messages(pb.Hello), st.lists(agent_messages(), max_size=8))  # fmt: skip
        path = "/edgebench.v1.AgentService/"
        plans: dict[str, tuple[Any, Callable[[Any], Any]]] = {
            "Session": (hellos, lambda sent: stub.Session(iter(sent), metadata=meta, timeout=10)),
            "FetchArtifact": (messages(pb.FetchArtifactRequest),
                              lambda r: stub.FetchArtifact(r, metadata=meta, timeout=10)),
            "RotateSecret": (HEADER_TEXT, lambda secret: stub.RotateSecret(
                pb.RotateSecretRequest(), metadata=(meta[0], ("x-edgebench-agent-secret", secret)),
                timeout=10)),
            "Enroll": (messages(pb.EnrollRequest), lambda r: stub.Enroll(r, timeout=10)),
            "garbage": (garbage(), lambda body: channel.unary_unary(path + "Enroll")(
                body, timeout=10)),
        }  # fmt: skip
        failed = False
        for name in args.rpc or RPCS:
            counts: Counter[str] = Counter()
            started = time.monotonic()
            _runner(args.calls, *plans[name], counts)
            seconds = time.monotonic() - started
            shown = ", ".join(f"{code} {n}" for code, n in counts.most_common())
            print(f"{name}: {sum(counts.values())} calls in {seconds:.0f} s: {shown}", flush=True)
            failed |= any(code not in {c.name for c in CLIENT_ERRORS} for code in counts)
        channel.close()
        _still_sound(coordinator)
        print("coordinator alive, health SERVING, API reads 200, no result without payload")
    finally:
        stop(coordinator.process)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
