"""Environment variables: the operator's and the runtime's pydantic settings, the gateway's options."""

from __future__ import annotations

import re
from typing import Any

import click
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from imagefleet.config import OperatorSettings
from imagefleet.gateway.command import gateway
from imagefleet_runtime.settings import Settings as RuntimeSettings

from .helm_values import CHART
from .markdown import code, header, table

# `- name: IMAGEFLEET_X` and its `value:` line in the operator's Deployment template.
_CHART_ENV = re.compile(r"- name: (IMAGEFLEET_\w+)\n\s+value: (.*)")
_VALUE = re.compile(r"\.Values\.([\w.]+)")


def chart_values() -> dict[str, str]:
    """Operator variable -> the chart value that sets it ("" for one the chart sets on its own)."""
    template = (CHART / "templates" / "deployment.yaml").read_text()
    found = {}
    for name, expression in _CHART_ENV.findall(template):
        value = _VALUE.search(expression)
        found[name] = value.group(1) if value else ""
    return found


def _default(field: FieldInfo) -> str:
    default: Any = field.get_default(call_default_factory=True)
    if default is None or default == "":
        return "unset"
    return code(str(default).lower() if isinstance(default, bool) else str(default))


def settings_rows(settings: type[BaseSettings], chart: dict[str, str] | None = None) -> list[list[str]]:
    prefix = settings.model_config.get("env_prefix", "")
    found = []
    for name, field in settings.model_fields.items():
        variable = f"{prefix}{name}".upper()
        row = [code(variable), _default(field), field.description or ""]
        if chart is not None:
            value = chart.get(variable)
            row.append("`extraEnv`" if value is None else code(value) if value else "set by the chart")
        found.append(row)
    return found


def gateway_rows() -> list[list[str]]:
    found = []
    for option in gateway.params:
        if isinstance(option, click.Option) and isinstance(option.envvar, str):
            default = "unset" if option.default is None else code(str(option.default))
            found.append([code(option.envvar), default, option.help or "", code(option.opts[0])])
    return found


def render() -> str:
    return (
        header("python -m imagefleet_docs",
               "imagefleet/config.py, imagefleet/gateway/command.py and imagefleet_runtime/settings.py")
        + "\n# Environment variables\n\n"
        "## The operator (`imagefleet run`)\n\n"
        "Read once at start-up. The chart sets some from its values (last column); set the others\n"
        "with the chart's `extraEnv` ([Helm values](helm-values.md)).\n\n"
        + table(["variable", "default", "what it does", "chart value"], settings_rows(OperatorSettings, chart_values()))
        + "\n## The gateway (`imagefleet gateway`)\n\n"
        "Each is also a command-line option ([CLI](cli.md#imagefleet-gateway)); the option wins.\n\n"
        + table(["variable", "default", "what it does", "option"], gateway_rows())
        + "\n## The runtime (`imagefleet-runtime`)\n\n"
        "The operator sets these on every runtime pod from the resource's spec and its tier; each is\n"
        "also a flag, `--` and the name after `IMAGEFLEET_` in lower case with dashes (the flag wins).\n"
        "[runtime](../runtime.md#settings) says which spec field sets which.\n\n"
        + table(["variable", "default", "what it does"], settings_rows(RuntimeSettings))
    )
