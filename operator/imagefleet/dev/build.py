"""Build the control-plane binaries from Go modules into a cache keyed by version.

Only the first run builds (the three Kubernetes binaries take about five minutes on
two cores); later runs find `<cache>/bin/<name>-<version>/` and return at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from .components import ALL, Component, SourcePatch
from .errors import DevError
from .paths import cache_dir

Progress = Callable[[str], None]

_LOCAL_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(\.\.?/\S*)\s*$")
_REQUIREMENT = re.compile(r"^\s*(?:require\s+)?(\S+)\s+v\d\S*(?:\s*//.*)?$")
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)


def binary_dir(component: Component) -> Path:
    return cache_dir() / "bin" / component.key


def binaries(components: Iterable[Component] = ALL) -> dict[str, Path]:
    """Paths of the binaries of `components`; each must already be built."""
    return {
        name: binary_dir(component) / name
        for component in components
        for name in component.binaries
    }


def ensure_built(components: Iterable[Component], progress: Progress = print) -> dict[str, Path]:
    """Build whatever of `components` is missing from the cache; return all their binaries."""
    components = tuple(components)
    for component in components:
        if not binary_dir(component).is_dir():
            _build(component, progress)
    return binaries(components)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise DevError(
            "Go is not on PATH: install Go 1.26 (Debian: apt-get install golang-1.26, or go.dev/dl) "
            "and run again; it builds the control plane once into " + str(cache_dir() / "bin")
        )
    return go


def _build(component: Component, progress: Progress) -> None:
    go = _go()
    final = binary_dir(component)
    staging = final.with_name(f".{component.key}.partial")
    work = cache_dir() / "build" / component.key
    log_path = cache_dir() / "build" / f"{component.key}.log"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": component.toolchain, "GOFLAGS": "-mod=mod"}
    progress(
        f"building {component.name} {component.version} from Go modules "
        f"(first run only; log: {log_path})"
    )
    with log_path.open("w") as log:

        def go_run(*args: str, cwd: Path) -> str:
            log.write(f"$ go {' '.join(args)}\n")
            log.flush()
            result = subprocess.run(
                [go, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True
            )
            log.write(result.stdout)
            if result.returncode != 0:
                log.flush()
                raise DevError(
                    f"building {component.name} {component.version} failed: "
                    f"{_last_line(log_path)} (full log: {log_path})"
                )
            return result.stdout

        ldflags = " ".join(["-s", "-w", *component.ldflags(component.version)])
        tags = [f"-tags={','.join(component.tags)}"] if component.tags else []
        if component.own_go_mod:
            env["GOFLAGS"] = "-mod=readonly"  # exactly the module's go.sum
            info = json.loads(
                go_run("mod", "download", "-json", f"{component.module}@{component.version}", cwd=work)
            )
            source = module_copy(component, Path(info["Dir"]), work)
            for name, package in component.binaries.items():
                go_run("build", "-trimpath", f"-ldflags={ldflags}", *tags, "-o", str(staging / name), package, cwd=source)
        elif component.replaced_version is None:
            env["GOBIN"] = str(staging)
            for name, package in component.binaries.items():
                go_run("install", "-trimpath", f"-ldflags={ldflags}", *tags, f"{package}@{component.version}", cwd=work)
                installed = staging / Path(package).name
                if installed.name != name:
                    installed.rename(staging / name)
        else:
            _write_wrapper_module(component, work, go_run)
            go_run("mod", "tidy", cwd=work)
            for name, package in component.binaries.items():
                go_run("build", "-trimpath", f"-ldflags={ldflags}", *tags, "-o", str(staging / name), package, cwd=work)
        if component.module_files:
            info = json.loads(
                go_run("mod", "download", "-json", f"{component.module}@{component.version}", cwd=work)
            )
            _assemble_module_files(component, Path(info["Dir"]), staging)
    staging.rename(final)
    progress(f"built {component.name} {component.version} into {final}")


def _write_wrapper_module(component: Component, work: Path, go_run: Callable[..., str]) -> None:
    info = json.loads(go_run("mod", "download", "-json", f"{component.module}@{component.version}", cwd=work))
    local = f"./{module_copy(component, Path(info['Dir']), work).name}" if component.patches else None
    (work / "go.mod").write_text(wrapper_go_mod(component, Path(info["GoMod"]).read_text(), local))
    (work / "go.sum").unlink(missing_ok=True)
    imports = "\n".join(f'\t_ "{package}"' for package in component.binaries.values())
    (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")


MODULE_COPY_DIR = "module"


def module_copy(component: Component, module_dir: Path, work: Path) -> Path:
    """A copy of the module (hard links: seconds, no extra space) with the patched files, and
    go.mod and go.sum, written anew (never through a link into the read-only module cache)."""
    copy = work / MODULE_COPY_DIR
    if copy.exists():
        _make_writable(copy)
        shutil.rmtree(copy)
    shutil.copytree(module_dir, copy, copy_function=os.link)
    _make_writable(copy)
    for patch in component.patches:
        target = copy / patch.path
        text = patched_source(component, patch, target.read_text())
        target.unlink()  # the link, not the module cache's file
        target.write_text(text)
    for name in ("go.mod", "go.sum"):
        target = copy / name
        if target.exists():
            text = target.read_text()
            target.unlink()
            target.write_text(text)
    return copy


def _make_writable(tree: Path) -> None:
    """Module cache directories are read-only; make a copy's directories writable."""
    for directory in [tree, *(path for path in tree.rglob("*") if path.is_dir())]:
        directory.chmod(0o755)


def patched_source(component: Component, patch: SourcePatch, original: str) -> str:
    """`original` with `patch` applied; a DevError unless its text occurs exactly once."""
    count = original.count(patch.old)
    if count != 1:
        raise DevError(
            f"cannot patch {component.module}@{component.version} {patch.path} ({patch.why}): "
            f"the text to replace occurs {count} times, not once"
        )
    return original.replace(patch.old, patch.new)


def wrapper_go_mod(component: Component, upstream_go_mod: str, local: str | None = None) -> str:
    """A go.mod that requires `component` and pins each required module its go.mod replaces
    locally; `local` (a patched copy) replaces the component's own module."""
    assert component.replaced_version is not None
    go_version = _GO_DIRECTIVE.search(upstream_go_mod)
    pinned = component.replaced_version(component.version)
    upstream_lines = upstream_go_mod.splitlines()
    required = {m.group(1) for line in upstream_lines if (m := _REQUIREMENT.match(line))}
    replaced = sorted(
        {m.group(1) for line in upstream_lines if (m := _LOCAL_REPLACE.match(line))} & required
    )
    lines = [
        f"module imagefleet.local/build/{component.name}",
        "",
        f"go {go_version.group(1) if go_version else '1.26'}",
        "",
        f"require {component.module} {component.version}",
        "",
        "replace (",
        *([f"\t{component.module} => {local}"] if local else []),
        *(f"\t{module} => {module} {pinned}" for module in replaced),
        ")",
        "",
    ]
    return "\n".join(lines)


def _assemble_module_files(component: Component, module_dir: Path, target: Path) -> None:
    """Concatenate the YAML documents matched by each output's globs (kustomizations skipped)."""
    for name, patterns in component.module_files.items():
        documents = [
            path.read_text().strip()
            for pattern in patterns
            for path in sorted(module_dir.glob(pattern))
            if path.name != "kustomization.yaml"
        ]
        if not documents:
            raise DevError(f"{component.module}@{component.version} has no files matching {patterns}")
        (target / name).write_text("\n---\n".join(documents) + "\n")


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
