"""Reading a search-space YAML into a :class:`SweepSpace`, with errors that say where and what.

Every problem is reported as ``<file>:<line>: <key path>: <what is allowed>; got <value>``. The YAML is parsed
with ``yaml.safe_load``; its node tree (``yaml.compose`` with the safe loader, which builds no Python objects)
is used only to find line numbers and to refuse duplicate keys, which ``safe_load`` would silently collapse.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ._model import SweepSpace

__all__ = ["SpaceError", "Problem", "load_space", "parse_space"]

_NO_VALUE = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a search space.

    Attributes:
        path: key path, e.g. ``parameters.entanglement.choice[1]`` ("" for the whole document).
        message: what is wrong and what is allowed.
        value: the offending value (omitted for a missing key).
        line: 1-based line in the file when known.
    """

    path: str
    message: str
    value: Any = _NO_VALUE
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return text if self.value is _NO_VALUE else f"{text}; got {self.value!r}"


class SpaceError(ValueError):
    """An invalid search space. ``source`` is the file (or ``<mapping>``), ``problems`` the individual issues.

    The message has one line per problem: file, line, key path, the rule, and the value.
    """

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [p.render(source) for p in self.problems]
        if len(lines) == 1:
            text = f"invalid search space: {lines[0]}"
        else:
            text = f"invalid search space {source} ({len(lines)} problems):\n" + "\n".join(f"  {x}" for x in lines)
        super().__init__(text)


#: The search spaces shipped inside the package (``orchestrator/search_spaces/<name>.yaml``).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


def shipped_spaces() -> dict[str, Path]:
    """``{name: path}`` of the search spaces shipped with qshield (the file stems: ``mnist5k-demo``, ``mnist``, ...)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


def resolve_space_path(path_or_name: str | Path) -> Path:
    """A space file: ``path_or_name`` when it is an existing file, else the shipped space of that name (with or
    without ``.yaml``); ``SpaceError`` naming the shipped spaces otherwise."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.is_dir():
        raise SpaceError(str(path_or_name), [Problem("", "is a folder; allowed values: a path to a .yaml file or the "
                                                         f"name of a shipped space ({', '.join(shipped_spaces())})")])
    shipped = shipped_spaces()
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if str(path_or_name) in (name, f"{name}.yaml") and name in shipped:
        return shipped[name]
    raise SpaceError(str(path_or_name), [Problem(
        "", f"no such file, and not the name of a shipped space; allowed values: a path to a .yaml file or one of "
            f"{', '.join(map(repr, shipped))}")])


def load_space(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpace:
    """Read and validate the search space in the YAML file ``path`` (or the shipped space of that name).

    Args:
        path: a ``.yaml`` file (see ``docs/search-spaces.md``) or the name of a shipped space
            (:func:`shipped_spaces`: ``mnist5k-demo``, ``mnist``, ``organamnist``, ``cifar10``, ...).
        overrides: top-level keys replacing the file's (e.g. ``{"storage_path": ...}`` from the command line);
            validated like the file's own.
    Raises:
        SpaceError: unreadable file, malformed YAML (with line and column), duplicate keys, or any schema
            violation (with line and key path).
    """
    path = resolve_space_path(path)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(source, [Problem("", f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise SpaceError(source, [Problem("", f"not UTF-8 text (byte {exc.start}); allowed values: a YAML file in "
                                              "UTF-8")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        col = f", column {mark.column + 1}" if mark is not None else ""
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SpaceError(source, [Problem("", f"malformed YAML{col}: {what}", line=line)]) from None
    except yaml.YAMLError as exc:
        raise SpaceError(source, [Problem("", f"malformed YAML: {exc}")]) from None
    if root is not None:
        duplicates = list(_duplicate_keys(root, ()))
        if duplicates:
            raise SpaceError(source, duplicates)
    if data is None:
        raise SpaceError(source, [Problem("", "the file is empty; a search space needs at least name and dataset")])
    if not isinstance(data, Mapping):
        raise SpaceError(
            source, [Problem("", f"the top level must be a mapping of keys ({_top_keys()})", type(data).__name__, 1)]
        )
    if overrides:
        data = {**data, **overrides}
    return parse_space(data, source, _root=root)


def parse_space(data: Any, source: str = "<mapping>", *, _root: yaml.Node | None = None) -> SweepSpace:
    """Validate an already-loaded mapping (e.g. from JSON or a test) into a :class:`SweepSpace`.

    Raises:
        SpaceError: as :func:`load_space` (without line numbers unless the YAML node tree is given).
    """
    if isinstance(data, SweepSpace):
        return data
    if not isinstance(data, Mapping):
        raise SpaceError(source, [Problem("", f"a search space is a mapping of keys ({_top_keys()})", data)])
    try:
        return SweepSpace.model_validate(dict(data))
    except ValidationError as exc:
        raise SpaceError(source, [_problem(err, _root) for err in exc.errors()]) from None


def replace_space(space: SweepSpace, **changes: Any) -> SweepSpace:
    """A re-validated copy of ``space`` with top-level keys replaced (e.g. ``num_samples`` from the CLI).

    Raises:
        SpaceError: a replaced value is invalid (source ``<replace>``).
    """
    return parse_space(space.to_dict() | changes, source="<replace>")


def _top_keys() -> str:
    return ", ".join(SweepSpace.model_fields)


def _problem(err: Mapping[str, Any], root: yaml.Node | None) -> Problem:
    """A pydantic error as a :class:`Problem` (key path, message, value, line)."""
    parts: list[str | int] = []
    for item in err["loc"]:
        if item == "[key]":  # a bad mapping key: the path already ends with the key itself
            continue
        parts.append(item)
    ctx = err.get("ctx") or {}
    if err["type"] == "qshield_space":
        parts.extend(ctx.get("subpath", ()))
        value = ctx.get("value", _NO_VALUE)
        message = str(ctx.get("detail", err["msg"]))
    elif err["type"] == "missing":
        value, message = _NO_VALUE, "required key is missing"
    else:
        value, message = err.get("input", _NO_VALUE), _plain_message(err)
        hint = _allowed_hint(parts)
        if hint and "allowed" not in message:
            message = f"{message}; allowed: {hint}"
    path = _format_path(parts)
    line = _line_of(root, parts) if root is not None else None
    return Problem(path, message, value, line)


#: what a YAML value of the wrong shape should have been, by pydantic error type
_SHAPES = {
    "list_type": "a list (YAML: [a, b], or one `- item` per line)",
    "tuple_type": "a list (YAML: [a, b], or one `- item` per line)",
    "dict_type": "a mapping (YAML: {key: value}, or one `key: value` per line)",
}


def _plain_message(err: Mapping[str, Any]) -> str:
    """pydantic's message, with the allowed values spelled as such."""
    msg = str(err["msg"])
    if err["type"] in _SHAPES:
        return f"must be {_SHAPES[err['type']]}"
    if err["type"] == "enum" and msg.startswith("Input should be "):
        return "allowed values: " + msg[len("Input should be ") :].replace(" or ", ", ")
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be ") :]
    return msg


def _allowed_hint(parts: Sequence[str | int]) -> str | None:
    """What a plain-typed field of the schema accepts, e.g. ``an integer >= 0`` or ``an integer >= 1, or null``.

    Found by walking the pydantic models along ``parts``; None where the path leaves them (domains, mappings).
    """
    model: Any = SweepSpace
    leaf: tuple[Any, list[Any], bool] | None = None
    for part in parts:
        if not (isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        leaf = _unwrap(info.annotation, list(info.metadata))
        model = leaf[0]
    if leaf is None:
        return None
    annotation, metadata, nullable = leaf
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation)
    if kind is None:
        return None
    bounds = []
    for item in metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{op} {getattr(item, attr)}")
    text = " ".join([kind, " and ".join(bounds)]).strip()
    return f"{text}, or null" if nullable else text


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """``X | None`` and ``Annotated[X, ...]`` -> (X, constraints, whether null is allowed)."""
    nullable = False
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if len(args) != 1:
            return None, metadata, nullable
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        for item in extra:
            metadata.extend(getattr(item, "metadata", [item]))
        annotation = base
    return annotation, metadata, nullable


def _format_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: yaml.Node, parts: Sequence[str | int]) -> int | None:
    """1-based line of the deepest node of ``parts`` found in the YAML node tree (a key's own line for keys)."""
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if getattr(kv[0], "value", None) == str(part)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...]) -> Iterator[Problem]:
    """Yield a :class:`Problem` for every key that appears twice in the same mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = getattr(key_node, "value", None)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                yield Problem(
                    _format_path(path + (key,)), f"duplicate key (first given on line {seen[key]})", key, line
                )
            elif isinstance(key, str):
                seen[key] = line
            yield from _duplicate_keys(value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, path + (i,))
