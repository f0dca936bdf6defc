"""What both ends of the agent protocol share: the metadata keys that carry an agent's
credential, the message-size limit and the rules for names and tags. Plain constants, so
that the CLI and the models of the HTTP API can use the name rules without protobuf; the
model <-> message conversion is edgebench/proto/convert.py."""

from __future__ import annotations

import re

AGENT_ID_KEY = "x-edgebench-agent-id"
AGENT_SECRET_KEY = "x-edgebench-agent-secret"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # either way; a result with its timings fits well

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
