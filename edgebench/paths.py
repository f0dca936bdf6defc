"""Where one installation keeps its files.

`EDGEBENCH_HOME=DIR` puts everything under DIR (tests, several agents on one machine);
otherwise the platform's user config, data and cache directories are used.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "edgebench"


def _home() -> Path | None:
    value = os.environ.get("EDGEBENCH_HOME", "").strip()
    return Path(value).expanduser().resolve() if value else None


def config_dir() -> Path:
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def tls_dir() -> Path:
    """The coordinator's certificate authority and server certificate."""
    return data_dir() / "tls"


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def admin_token_file() -> Path:
    """Where a coordinator started on this machine (or the demo) saves its admin token
    for the local CLI."""
    return config_dir() / "admin-token"


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_private(path: Path, text: str) -> None:
    """Writes a secret readable by the owner only (0600), never briefly world-readable."""
    ensure(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers never share it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
