"""Write the images' pinned requirement files from the tested environment.

    python docker/pin_requirements.py

For each image, the dependency closure of the project's requirements (pyproject.toml),
at the versions installed in the running interpreter's environment, evaluated for
Linux. The images install exactly these with `pip install --no-deps` and `pip check`.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LINUX = {**default_environment(), "platform_system": "Linux", "sys_platform": "linux"}
# image -> extras of the project it installs
IMAGES = {"operator": (), "runtime": ("runtime",)}


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Installed name -> version for `requirements` and everything they require."""
    pinned: dict[str, str] = {}
    expanded: set[tuple[str, str]] = set()  # (distribution, extra) whose requirements are queued
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, parent_extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({**LINUX, "extra": parent_extra}):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: install the project with its extras first")
        if dist.version not in requirement.specifier:
            raise SystemExit(f"installed {name} {dist.version} does not satisfy {requirement}")
        pinned[name] = dist.version
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) not in expanded:
                expanded.add((name, extra))
                pending.extend((Requirement(line), extra) for line in dist.requires or ())
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for image, extras in IMAGES.items():
        lines = list(project["dependencies"])
        for extra in extras:
            lines += project["optional-dependencies"][extra]
        pins = closure([Requirement(line) for line in lines])
        header = f"# The {image} image's pinned dependency closure; regenerate with docker/pin_requirements.py.\n"
        body = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
        (ROOT / "docker" / f"requirements-{image}.txt").write_text(header + body)
        print(f"docker/requirements-{image}.txt: {len(pins)} distributions")


if __name__ == "__main__":
    main()
