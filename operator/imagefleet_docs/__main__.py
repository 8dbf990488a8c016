"""`python -m imagefleet_docs [--check]`: write the generated reference pages, or fail when one is out of date."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from imagefleet import POOL_KIND
from imagefleet.crd.reference import render_reference

from . import cli, environment, helm_values, metrics
from .helm_values import CHART, ROOT
from .markdown import header


def chart_readme() -> str:
    """The chart's README, for people who meet the chart in a registry first."""
    return (
        header("python -m imagefleet_docs", "charts/imagefleet/values.schema.json and values.yaml")
        + "\n# imagefleet Helm chart\n\n"
        "A Kubernetes operator for GPU fleets that serve image-generation (diffusion) models: an\n"
        "`ImageModelDeployment` (model, tier, precision, GPU class, replica range) becomes checked,\n"
        "autoscaled runtime Deployments behind one OpenAI-compatible gateway.\n\n"
        "```bash\n"
        "helm install imagefleet charts/imagefleet --namespace imagefleet-system --create-namespace \\\n"
        "  --set prometheus.url=http://prometheus-operated.monitoring.svc:9090 --set gateway.enabled=true\n"
        "```\n\n"
        "Kubernetes 1.30 or newer. Helm installs the CRDs in `crds/` on the first install only: apply\n"
        "the new `crds/*.yaml` before each upgrade. The install's notes print the next\n"
        "commands (a first resource, a gateway key, a call). Documentation: the project's `README.md`\n"
        "and `docs/` ([getting started]"
        "(https://github.com/imagefleet/imagefleet/blob/main/docs/getting-started.md)).\n\n"
        "## Values\n\n"
        + helm_values.values_table()
    )


PAGES: dict[Path, Callable[[], str]] = {
    ROOT / "docs" / "reference" / "helm-values.md": helm_values.render,
    ROOT / "docs" / "reference" / "environment.md": environment.render,
    ROOT / "docs" / "reference" / "metrics.md": metrics.render,
    ROOT / "docs" / "reference" / "cli.md": cli.render,
    CHART / "README.md": chart_readme,
    ROOT / "docs" / "reference" / "imagemodelpool.md": lambda: render_reference(POOL_KIND),
}


def main(argv: list[str]) -> int:
    stale = [path for path, render in PAGES.items() if not path.is_file() or path.read_text() != render()]
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run `python -m imagefleet_docs`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(PAGES[path]())
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
