"""What both ends of the agent protocol share: the metadata keys that carry an agent's
credential, the message-size limit and the rules for names and tags. Plain constants, so
that the CLI and the models of the HTTP API can use the name rules without protobuf; the
model <-> message conversion is edgebench/proto/convert.py."""

from __future__ import annotations

import re

AGENT_ID_KEY = "x-edgebench-agent-id"
AGENT_SECRET_KEY = "x-edgebench-agent-secret"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # either way; a result with its timings fits well

# The oldest agent this coordinator's protocol serves (its `edgebench_version` at hello);
# raise it with any change an older agent would get wrong.
MIN_AGENT_VERSION = "0.1.0"


def too_old(version: str, minimum: str = MIN_AGENT_VERSION) -> bool:
    """Whether an agent's reported edgebench version is older than `minimum` (numeric
    parts compared). An unreadable one is too old; none at all is not judged (clients
    of the raw protocol, agents from before versions were reported)."""
    if not version.strip():
        return False

    def parts(text: str) -> tuple[int, ...] | None:
        found = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        return tuple(int(p or 0) for p in found.groups()) if found else None

    have, need = parts(version), parts(minimum)
    return have is None or need is None or have < need


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
