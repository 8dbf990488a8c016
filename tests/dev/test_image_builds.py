"""One build of each image at a time on a machine: CI builds the runtime image in the background
while the tests that need it wait for it (buildah itself is replaced here; tests/images builds for real)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imagefleet.dev import images
from tests.helpers import wait_until


def test_a_second_build_of_an_image_waits_for_the_first_and_another_image_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFLEET_CACHE_DIR", str(tmp_path))
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def build(spec: images.ImageSpec, root: Path, base: str, progress: images.Progress) -> images.Image:
        order.append(f"start {spec.name}")
        if spec is images.RUNTIME and not started.is_set():
            started.set()
            assert release.wait(10)
        order.append(f"end {spec.name}")
        return images.Image(f"localhost/{spec.name}:key", None, 1)

    monkeypatch.setattr(images, "_build", build)
    first = threading.Thread(target=images.build, args=(images.RUNTIME, tmp_path, "base", lambda _: None))
    first.start()
    assert started.wait(10)
    waiting: list[str] = []
    second = threading.Thread(target=images.build, args=(images.RUNTIME, tmp_path, "base", waiting.append))
    second.start()
    wait_until(lambda: waiting, timeout=10, message="the second build to say it waits")
    assert "waiting for another build of imagefleet-runtime" in waiting[0]
    images.build(images.OPERATOR, tmp_path, "base", lambda _: None)  # another image: not held up
    assert order == ["start imagefleet-runtime", "start imagefleet-operator", "end imagefleet-operator"]

    release.set()
    first.join(10)
    second.join(10)
    assert order[3:] == ["end imagefleet-runtime", "start imagefleet-runtime", "end imagefleet-runtime"]
