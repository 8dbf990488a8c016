"""install.md's RBAC table is what the chart grants the operator: every (API group, resource, verb)
of the operator's ClusterRole and Roles, rendered cluster-wide and per namespace, and nothing more."""

from __future__ import annotations

import re

import pytest

from tests.chart.helm import Helm

from .yaml_blocks import ROOT

INSTALL = ROOT / "docs" / "install.md"
VERBS = re.compile(r"\b(get|list|watch|create|update|patch|delete|deletecollection)\b")
Triple = tuple[str, str, str]


def documented() -> set[Triple]:
    section = INSTALL.read_text().split("### RBAC\n", 1)[1].split("\n### ", 1)[0]
    found = set()
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("API group", "---"):
            continue
        group = "" if cells[0] == '""' else cells[0]
        resources = [word for word in re.findall(r"[a-z]+(?:/[a-z]+)?", re.sub(r"`[^`]*`", "", cells[1]))
                     if word not in ("or", "with")]
        found |= {(group, resource, verb) for resource in resources for verb in VERBS.findall(cells[2])}
    return found


def granted(helm: Helm) -> set[Triple]:
    found = set()
    for values in ({"peering": {"enabled": True}}, {"peering": {"enabled": True}, "watchNamespaces": ["team"]}):
        for document in helm.template(values=values):
            if document["kind"] not in ("ClusterRole", "Role") or "gateway" in document["metadata"]["name"]:
                continue
            for rule in document["rules"]:
                found |= {(group, resource, verb) for group in rule["apiGroups"] for resource in rule["resources"]
                          for verb in rule["verbs"]}
    return found



def test_the_table_parses_to_rows() -> None:
    assert ("", "secrets", "get") in documented() and ("kopf.dev", "kopfpeerings", "patch") in documented()


def test_install_md_lists_exactly_what_the_chart_grants_the_operator(helm: Helm) -> None:
    table, chart = documented(), granted(helm)
    assert sorted(chart - table) == [], "granted by the chart but missing from install.md's RBAC table"
    assert sorted(table - chart) == [], "in install.md's RBAC table but not granted by the chart"
