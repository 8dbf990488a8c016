"""The command lines: `imagefleet` (click) and `imagefleet-runtime` (argparse, from its settings)."""

from __future__ import annotations

import argparse
import inspect

import click

from imagefleet.cli import main
from imagefleet_runtime.__main__ import parser as runtime_parser

from .markdown import code, header, table


def _default(option: click.Option) -> str:
    default = option.to_info_dict()["default"]  # None where unset
    if option.is_flag and not option.secondary_opts:
        return ""
    if default is None or default == () or callable(default):
        return str(option.show_default) if isinstance(option.show_default, str) else ""
    return code(str(default).lower() if isinstance(default, bool) else str(default))


def _params(command: click.Command) -> str:
    rows = []
    for param in command.params:
        if isinstance(param, click.Argument):
            repeatable = ", repeatable" if param.nargs == -1 else ""
            rows.append([code(param.human_readable_name), "", f"argument{repeatable}"])
        elif isinstance(param, click.Option) and not param.hidden:
            names = ", ".join(code(name) for name in [*param.opts, *param.secondary_opts])
            extra = f" (env `{param.envvar}`)" if isinstance(param.envvar, str) else ""
            rows.append([names, _default(param), (param.help or "") + extra])
    return table(["option", "default", "what it does"], rows) if rows else ""


def _commands(command: click.Command, path: str, depth: int) -> list[str]:
    context = click.Context(command, info_name=path)
    help_text = inspect.cleandoc((command.help or "").split("\f")[0])
    section = [f"{'#' * depth} `{path}`\n\n```text\n{path} {' '.join(command.collect_usage_pieces(context))}\n```\n\n"
               f"{help_text}\n\n{_params(command)}"]
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is not None:
                section += _commands(child, f"{path} {name}", min(depth + 1, 3))
    return section


def _runtime() -> str:
    rows = []
    for action in runtime_parser()._actions:  # noqa: SLF001 - argparse keeps its options only here
        if isinstance(action, argparse._HelpAction):  # noqa: SLF001
            continue
        rows.append([", ".join(code(flag) for flag in action.option_strings), action.help or ""])
    return (
        "## `imagefleet-runtime`\n\n```text\nimagefleet-runtime [OPTIONS]\n"
        "imagefleet-runtime download --model M --target DIR [--variant V]\n```\n\n"
        "Serves one model; `download` fills a model cache (the operator's download Job runs it).\n\n"
        + table(["option", "what it does"], rows)
    )


def render() -> str:
    return (
        header("python -m imagefleet_docs", "the click commands of `imagefleet` and the runtime's settings")
        + "\n# Command line\n\n"
        + "\n".join(_commands(main, "imagefleet", 2))
        + "\n" + _runtime()
    )
