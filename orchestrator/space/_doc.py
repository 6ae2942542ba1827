"""The parameter table of ``docs/search-spaces.md``, generated from :data:`~orchestrator.space.PARAMETERS` (itself
derived from the library's configs), so the documentation cannot drift from the rules.

Regenerate with ``python -m orchestrator.space --write-docs``; ``--check-docs`` (and ``tests/test_space.py``)
fails when the page is out of date. Hand-written because the table sits inside a prose page: the generator
replaces only the block between the two markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._domains import PARAMETERS, ParamSpec

__all__ = ["BEGIN", "END", "DOCS_PAGE", "parameters_table", "render_page"]

BEGIN = "<!-- BEGIN GENERATED parameters: python -m orchestrator.space --write-docs -->"
END = "<!-- END GENERATED parameters -->"
#: The page holding the table, relative to the repository root.
DOCS_PAGE = Path("docs") / "search-spaces.md"


def _num(x: float | None, kind: str) -> str:
    assert x is not None
    return str(int(x)) if kind == "int" else f"{x:g}"


def _allowed(spec: ParamSpec) -> str:
    if spec.kind == "enum":
        assert spec.choices is not None
        text = ", ".join(f"`{m.value}`" for m in spec.choices)
    elif spec.kind == "bool":
        text = "`true`, `false`"
    elif spec.lo is not None and spec.hi is not None:
        lo, hi = _num(spec.lo, spec.kind), _num(spec.hi, spec.kind)
        text = f"{lo}..{hi}" if spec.kind == "int" else (
            f"{'(' if spec.lo_open else '['}{lo}, {hi}{')' if spec.hi_open else ']'}")
    elif spec.lo is not None:
        text = f"{'>' if spec.lo_open else '≥'} {_num(spec.lo, spec.kind)}"
    elif spec.hi is not None:
        text = f"{'<' if spec.hi_open else '≤'} {_num(spec.hi, spec.kind)}"
    else:
        text = "any finite number"
    return text + (" or null" if spec.nullable else "")


def _default(value: Any) -> str:
    value = getattr(value, "value", value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def parameters_table() -> str:
    """The Markdown table: parameter, kind, allowed values, default, where the rule lives, notes."""
    kinds = {"enum": "enum", "int": "int", "float": "real", "bool": "bool"}
    lines = [
        "| parameter | kind | allowed | default | rule of | notes |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in PARAMETERS.items():
        owner = spec.owner.__name__ if spec.owner is not None else ""
        lines.append(f"| `{name}` | {kinds[spec.kind]} | {_allowed(spec)} | {_default(spec.default)} | "
                     f"`{owner}.{name}` | {spec.doc} |")
    return "\n".join(lines)


def render_page(text: str) -> str:
    """``text`` (the page) with the block between :data:`BEGIN` and :data:`END` replaced by the current table;
    ``ValueError`` when the markers are missing."""
    try:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"the page has no generated block ({BEGIN!r} ... {END!r})") from None
    return f"{head}{BEGIN}\n{parameters_table()}\n{END}{tail}"
