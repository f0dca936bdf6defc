"""The coordinator serves the wheel of its own edgebench (`/agent/`), so a board installs
an agent that speaks its protocol with one pip command (edgebench is on no package
index). The wheel is the one an operator put in `DATA/agent/`, else it is built once from
the source tree this edgebench runs from (a checkout or an editable install); an
edgebench installed from a wheel without one there serves none and says why."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from edgebench import __version__, paths
from edgebench.errors import EdgebenchError

WHEEL_NAME = f"edgebench-{__version__}-py3-none-any.whl"
SOURCE = Path(__file__).resolve().parents[2]  # the checkout, when there is one


class NoWheel(EdgebenchError):
    pass


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str


class AgentWheel:
    """The wheel, found or built once per process (a build takes a second or two)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or paths.data_dir() / "agent"
        self._lock = threading.Lock()
        self._wheel: Wheel | None = None

    def get(self) -> Wheel:
        with self._lock:
            if self._wheel is None:
                path = self.folder / WHEEL_NAME
                if not path.is_file():
                    self._build(path)
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                self._wheel = Wheel(path, digest)
            return self._wheel

    def _build(self, target: Path) -> None:
        if not (SOURCE / "pyproject.toml").is_file():
            raise NoWheel(
                f"this coordinator's edgebench was not installed from source: put "
                f"{WHEEL_NAME} in {self.folder} to serve it to agents"
            )
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                       "--quiet", "-w", scratch, str(SOURCE)]  # fmt: skip
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise NoWheel(f"building the agent wheel failed: {exc}") from None
            built = Path(scratch) / WHEEL_NAME
            if done.returncode != 0 or not built.is_file():
                why = (done.stderr or done.stdout).strip().splitlines()
                raise NoWheel(f"building the agent wheel failed: {why[-1] if why else '?'}")
            paths.ensure(self.folder)
            shutil.move(str(built), target)
