"""Runtime processes of the node agent: start, find after a restart, signal, read their logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..dev.processes import alive
from .plan import AGENT_ID_VARIABLE, POD_UID_VARIABLE

RUNTIME_COMMAND = (sys.executable, "-m", "imagefleet_runtime")
# One thread each: a hundred emulated pods share two cores.
_QUIET = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
LOG_TAIL_BYTES = 4096


@dataclass
class RuntimeProcess:
    """One runtime process; `child` is None for a process adopted after an agent restart."""

    pid: int
    log: Path
    started_at: datetime
    child: subprocess.Popen[bytes] | None = None

    def exited(self) -> tuple[bool, int | None]:
        """(whether it has exited, its exit code when known)."""
        if self.child is not None:
            code = self.child.poll()
            return code is not None, code
        return not alive(self.pid), None

    def signal(self, number: signal.Signals) -> None:
        """Signal the process's group (the runtime and anything it started)."""
        try:
            os.killpg(self.pid, number)
        except ProcessLookupError:
            pass

    def log_tail(self) -> str:
        try:
            with self.log.open("rb") as file:
                file.seek(max(0, file.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return file.read().decode(errors="replace")
        except OSError:
            return ""


def start(env: Mapping[str, str], log: Path) -> RuntimeProcess:
    """Start the runtime in a session of its own (it outlives an agent that crashes)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # The agent's own IMAGEFLEET_* settings are not the pod's.
    base = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEFLEET_")}
    with log.open("ab") as out:
        child = subprocess.Popen(
            RUNTIME_COMMAND,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**base, **_QUIET, **env},
        )
    return RuntimeProcess(child.pid, log, datetime.now(UTC), child)


def find(agent_id: str) -> dict[str, list[int]]:
    """Live processes this agent (by id) started, by pod UID, oldest first."""
    found: dict[str, list[tuple[float, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
            started = (entry / "stat").stat().st_mtime
        except OSError:
            continue
        variables = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if variables.get(AGENT_ID_VARIABLE) == agent_id and POD_UID_VARIABLE in variables:
            pid = int(entry.name)
            if alive(pid):
                found.setdefault(variables[POD_UID_VARIABLE], []).append((started, pid))
    return {uid: [pid for _, pid in sorted(pids)] for uid, pids in found.items()}


def adopt(pid: int, log: Path) -> RuntimeProcess:
    """A RuntimeProcess for a runtime an earlier agent started."""
    try:
        started = datetime.fromtimestamp(Path(f"/proc/{pid}").stat().st_mtime, UTC)
    except OSError:
        started = datetime.now(UTC)
    return RuntimeProcess(pid, log, started)
