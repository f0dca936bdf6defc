"""The agent as a systemd service (`agent install [--user]`, `agent uninstall`).

Privilege model: the agent never runs as root. A system unit runs it as the installing
user (User=), a `--user` unit in that user's own manager. The unit is hardened:
NoNewPrivileges, ProtectSystem=strict with only the agent's config, data and cache
directories writable, ProtectHome=read-only (so a pipx install under /home still runs),
a private /tmp. What needs root is not the agent's: RAPL's `energy_uj` is root-only since
Linux 5.10, so a system install also writes `edgebench-sensors.service`, a root oneshot
that makes those counters readable by the agent's group at boot (nothing else). A
`--user` install cannot write it: without it RAPL energy is missing (the result says
why), and the agent starts at login unless lingering is enabled (`loginctl
enable-linger`). Governors and `nvpmodel` are not changed by the agent.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgebench import paths
from edgebench.errors import EdgebenchError

UNIT = "edgebench-agent.service"
SENSORS_UNIT = "edgebench-sensors.service"
SYSTEM_DIR = Path("/etc/systemd/system")


class ServiceError(EdgebenchError):
    pass


@dataclass(frozen=True)
class Install:
    user_unit: bool  # in the user's own manager (--user), else a system unit
    executable: str  # the Python that runs edgebench now (its venv's, pipx's)
    user: str
    group: str
    home: str | None  # EDGEBENCH_HOME to keep, when set

    @property
    def unit_dir(self) -> Path:
        if self.user_unit:
            return Path.home() / ".config/systemd/user"
        return SYSTEM_DIR

    def writable(self) -> list[Path]:
        return [paths.config_dir(), paths.data_dir(), paths.cache_dir()]


def this_install(user_unit: bool) -> Install:
    """The unit for the edgebench running now (its own interpreter, so the venv or pipx
    environment it lives in), as the user running it."""
    executable = sys.executable
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    return Install(user_unit, executable, user, group, os.environ.get("EDGEBENCH_HOME"))


def agent_unit(install: Install) -> str:
    writable = " ".join(str(p) for p in install.writable())
    lines = [
        "[Unit]",
        "Description=edgebench agent: runs benchmarks for its coordinator",
        "Wants=network-online.target",
        "After=network-online.target",
        *([] if install.user_unit else [f"Wants={SENSORS_UNIT}", f"After={SENSORS_UNIT}"]),
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={install.executable} -m edgebench agent run",
        *([f"Environment=EDGEBENCH_HOME={install.home}"] if install.home else []),
        *([] if install.user_unit else [f"User={install.user}", f"Group={install.group}"]),
        "Restart=on-failure",
        "RestartSec=10",
        "WatchdogSec=120",
        "TimeoutStopSec=30",
        # the measuring child goes back to nice 0 (`agent run --nice`): only this capability
        *(
            []
            if install.user_unit
            else ["AmbientCapabilities=CAP_SYS_NICE", "CapabilityBoundingSet=CAP_SYS_NICE"]
        ),
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={writable}",
        "PrivateTmp=yes",
        "ProtectControlGroups=yes",
        "ProtectKernelModules=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        f"WantedBy={'default.target' if install.user_unit else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


_COUNTERS = (
    "/sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj"
)


def sensors_unit(install: Install) -> str:
    """The one thing done as root: RAPL's energy counters readable by the agent's group."""
    each = f'[ -e "$f" ] && chgrp {install.group} "$f" && chmod g+r "$f"'
    script = f"for f in {_COUNTERS}; do {each}; done; true"
    return "\n".join([
        "[Unit]",
        "Description=edgebench: RAPL energy counters readable by the agent's group",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart=/bin/sh -c '{script}'",
        "RemainAfterExit=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])  # fmt: skip


def has_systemd(user_unit: bool) -> bool:
    """A systemd manager that `systemctl` reaches (installed is not enough: a container
    or a chroot has the binary and no manager, and says "offline")."""
    if shutil.which("systemctl") is None:
        return False
    command = ["systemctl", *(["--user"] if user_unit else []), "is-system-running"]
    try:
        said = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(said.strip()) and said.strip() not in ("offline", "unknown")


def install(unit_install: Install) -> list[Path]:
    """Writes the unit(s), then reloads, enables and starts the agent. Returns the files
    written."""
    unit_install.unit_dir.mkdir(parents=True, exist_ok=True)
    written = [unit_install.unit_dir / UNIT]
    written[0].write_text(agent_unit(unit_install))
    if not unit_install.user_unit:
        written.append(unit_install.unit_dir / SENSORS_UNIT)
        written[1].write_text(sensors_unit(unit_install))
    _systemctl(unit_install.user_unit, "daemon-reload")
    units = [UNIT] if unit_install.user_unit else [SENSORS_UNIT, UNIT]
    _systemctl(unit_install.user_unit, "enable", "--now", *units)
    return written


def uninstall(user_unit: bool) -> list[Path]:
    """Stops and disables the agent and removes what `install` wrote."""
    directory = Path.home() / ".config/systemd/user" if user_unit else SYSTEM_DIR
    names = [UNIT] if user_unit else [UNIT, SENSORS_UNIT]
    present = [directory / name for name in names if (directory / name).exists()]
    if not present:
        raise ServiceError(f"no {UNIT} under {directory}: nothing to uninstall")
    _systemctl(user_unit, "disable", "--now", *(p.name for p in present))
    for path in present:
        path.unlink()
    _systemctl(user_unit, "daemon-reload")
    return present


def _systemctl(user_unit: bool, *args: str) -> None:
    command = ["systemctl", *(["--user"] if user_unit else []), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{' '.join(command)} failed: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ServiceError(f"{' '.join(command)} failed: {why[-1] if why else done.returncode}")
