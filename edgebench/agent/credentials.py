"""The agent's credential: written once at enrollment, readable by its owner only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgebench import paths
from edgebench.errors import EdgebenchError

CREDENTIAL_FILE = "agent.json"


class NotEnrolled(EdgebenchError, RuntimeError):
    pass


@dataclass(frozen=True)
class Credential:
    coordinator: str  # HOST:PORT of the coordinator's gRPC service
    agent_id: str
    secret: str
    device_id: str
    device_name: str
    # PEM of the TLS authority every connection is verified against ("": plaintext,
    # enrolled with a coordinator serving --insecure)
    authority_pem: str = ""


def credential_path() -> Path:
    return paths.config_dir() / CREDENTIAL_FILE


def save(credential: Credential) -> Path:
    path = credential_path()
    paths.write_private(path, json.dumps(asdict(credential), indent=2) + "\n")
    return path


def load() -> Credential:
    path = credential_path()
    try:
        data = json.loads(path.read_text())
        optional = {"authority_pem"}  # absent in credentials written before TLS
        return Credential(
            **{
                key: str(data[key])
                for key in Credential.__dataclass_fields__
                if key in data or key not in optional
            }
        )
    except FileNotFoundError:
        raise NotEnrolled(
            f"this agent is not enrolled ({path} is missing): run "
            "`edgebench agent enroll --coordinator HOST:PORT --token T` first"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise NotEnrolled(f"{path} is damaged ({exc}); enroll again") from None
