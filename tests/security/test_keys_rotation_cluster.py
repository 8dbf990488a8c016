"""Finding 8: keys are rotated without a restart, and every request is traced to a key's name.

Attack, on the real gateway process (watching the real API server): a key leaks; the platform team
replaces it in the keys file (what a changed Secret does to the mounted file). The leaked key is
refused from then on and the new one served, by the same process. Its access log names the key of
each request and never holds a key itself.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from imagefleet.gateway.auth import digest
from tests.conftest import Cluster
from tests.gateway.process import gateway_process
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once

# The gateway is ready once its watches listed, which needs the CRD (alone, this test had none).
pytestmark = pytest.mark.usefixtures("imd_crd")

LEAKED, NEW = "sk-leaked-0123456789", "sk-rotated-9876543210"


def keys_file(name: str, key: str) -> str:
    return f"keys:\n  - name: {name}\n    sha256: {digest(key)}\n"


def status(url: str, key: str) -> int:
    return httpx.post(f"{url}/v1/images/generations", headers={"authorization": f"Bearer {key}"},
                      json={"model": "nothing-here", "prompt": "x"}, timeout=10).status_code


def test_a_leaked_key_is_refused_once_the_keys_file_changes(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(keys_file("team-a", LEAKED))
    log = tmp_path / "gateway.log"
    with gateway_process(cluster.kubeconfig, namespace, log, "--api-keys", str(keys)) as gateway:
        assert status(gateway.url, LEAKED) == 404  # authorized; no such group here
        assert status(gateway.url, NEW) == 401
        keys.write_text("keys: [this is not a keys file")  # a broken file keeps the keys served
        keys.write_text(keys_file("team-a-rotated", NEW))
        wait_until(lambda: status(gateway.url, NEW) == 404, timeout=15, interval=0.2, message="the new key served")
        assert status(gateway.url, LEAKED) == 401
    text = log.read_text()
    assert "key=team-a model='nothing-here' quality=None status=404" in text
    assert "key=team-a-rotated model='nothing-here' quality=None status=404" in text
    assert "key=- model=None quality=None status=401" in text  # refused before its body was read
    assert LEAKED not in text and NEW not in text


def test_a_keys_file_with_a_hash_twice_is_refused(tmp_path: Path) -> None:
    """Low finding: two entries with one hash (a narrow scope and a broad one) were accepted and the
    last won. The gateway now refuses to start on such a file, naming the problem."""
    import os
    import subprocess
    import sys

    keys = tmp_path / "keys.yaml"
    keys.write_text(keys_file("team-a", LEAKED) + f"  - name: everything\n    sha256: {digest(LEAKED)}\n")
    result = subprocess.run([sys.executable, "-m", "imagefleet", "gateway", "--api-keys", str(keys)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 2 and "sha256 must be unique" in result.stderr, result.stderr
