"""Running an image with `buildah run`: the image's own entrypoint and user, the host's network
(chroot isolation shares it), files mounted from the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from imagefleet.dev.images import buildah


def image_config(reference: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(buildah("inspect", "--type", "image", reference))["OCIv1"]["config"]
    return config


class Container:
    """One working container of `reference`, running its entrypoint with `args`; `mounts`
    maps a host path to where it appears inside, with options ("/etc/x:ro")."""

    def __init__(
        self, reference: str, args: Sequence[str], log: Path,
        env: Mapping[str, str] | None = None, mounts: Mapping[Path, str] | None = None,
    ) -> None:
        config = image_config(reference)
        self.entrypoint = list(config.get("Entrypoint") or [])  # type: ignore[call-overload]
        self.user = str(config.get("User") or "")
        self.log = log
        self.name = buildah("from", "--quiet", reference).strip()
        options = [f"--env={key}={value}" for key, value in (env or {}).items()]
        options += [f"--volume={host}:{inside}" for host, inside in (mounts or {}).items()]
        argv = ["buildah", "run", "--isolation", "chroot", f"--user={self.user}", *options,
                self.name, "--", *self.entrypoint, *args]
        with log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the container exited with {self.process.returncode}: {self.log_tail()}")
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        subprocess.run(["buildah", "rm", self.name], capture_output=True)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
