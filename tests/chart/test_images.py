"""The Dockerfiles (not buildable here: no Docker) checked against what the chart and operator expect."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imagefleet.builders.deployment import CACHE_DIR, RUNTIME_UID

from .helm import CHART, ROOT

DOCKER = ROOT / "docker"
GPU_STACK = {"torch", "diffusers", "transformers", "accelerate", "triton"}


def pins(image: str) -> dict[str, str]:
    lines = (DOCKER / f"requirements-{image}.txt").read_text().splitlines()
    pinned = {}
    for line in lines:
        if line.startswith("#"):
            continue
        name, _, version = line.partition("==")
        assert version and re.fullmatch(r"[\w.+!-]+", version), f"not pinned: {line!r}"
        pinned[canonicalize_name(name)] = version
    return pinned


def final_user(dockerfile: str) -> str:
    return re.findall(r"^USER (\S+)$", (DOCKER / dockerfile).read_text(), re.MULTILINE)[-1]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.operator", "Dockerfile.runtime"])
def test_base_images_are_pinned(dockerfile: str) -> None:
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", (DOCKER / dockerfile).read_text(), re.MULTILINE):
        name, _, tag = image.partition(":")
        assert re.search(r"\d+\.\d+", tag), f"{dockerfile}: base {image} has no version tag"


def test_operator_image_runs_as_the_charts_non_root_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert final_user("Dockerfile.operator") == f"{uid}:{uid}"


def test_runtime_image_runs_as_the_user_and_caches_the_operator_expects() -> None:
    assert final_user("Dockerfile.runtime") == f"{RUNTIME_UID}:{RUNTIME_UID}"
    text = (DOCKER / "Dockerfile.runtime").read_text()
    for variable in ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR"):
        match = re.search(rf"\b{variable}=(\S+)", text)
        assert match and match.group(1).startswith(CACHE_DIR), f"{variable} must live under the {CACHE_DIR} emptyDir"
    assert re.search(r"\bHOME=/tmp\b", text)


def test_operator_image_has_no_torch_and_no_runtime_code() -> None:
    assert not GPU_STACK & set(pins("operator")) and not any(n.startswith("nvidia-") for n in pins("operator"))
    assert "runtime/" not in (DOCKER / "Dockerfile.operator").read_text()
    assert {"torch", "diffusers"} <= set(pins("runtime"))


@pytest.mark.parametrize(("image", "extras"), [("operator", ()), ("runtime", ("runtime",))])
def test_pins_satisfy_the_project_requirements(image: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [line for extra in extras for line in project["optional-dependencies"][extra]]
    pinned = pins(image)
    for requirement in map(Requirement, lines):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"requirements-{image}.txt lacks {name}: run docker/pin_requirements.py"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} does not satisfy {requirement}"


IMPORT_WITH_ONLY = """
import importlib, importlib.metadata as metadata, sys
allowed = set(sys.argv[1].split(","))
owners = metadata.packages_distributions()
canonical = lambda name: name.lower().replace("_", "-").replace(".", "-")

class OnlyPinned:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = owners.get(top)
        if dists and not allowed & {canonical(d) for d in dists}:
            raise ImportError(f"{name} comes from {dists}, which the image does not install")
        return None

sys.meta_path.insert(0, OnlyPinned())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def test_operator_image_dependencies_are_enough_to_run_the_operator() -> None:
    """`imagefleet run` and its handlers import with only the operator image's distributions."""
    allowed = ",".join([*pins("operator"), "imagefleet"])
    modules = ["imagefleet.cli", "imagefleet.runner", "imagefleet.handlers"]
    result = subprocess.run([sys.executable, "-c", IMPORT_WITH_ONLY, allowed, *modules],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
