"""Read YAML keeping the file and line of every key, so errors can point at them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str, ...]
Where = tuple[str, int | None]  # (file, 1-based line); (override label, None) for a --set


class YamlSyntaxError(ValueError):
    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line = file, line
        super().__init__(message)


_PARSED: dict[tuple[str, int, int], tuple[Any, dict[Path_, Where]]] = {}
_PARSED_MAX = 256


def load_with_lines(path: Path) -> tuple[Any, dict[Path_, Where]]:
    """Parse ``path``; return the plain data and a map from key path to (file, line).

    Parses are memoised by (file, mtime, size): a sweep loads the same system and preset files once per
    point, and pure-Python YAML parsing was 90% of expanding one. Callers get a deep copy, since the loader
    merges into what it reads."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = _parse(path)
    return copy.deepcopy(_PARSED[key])


def _parse(path: Path) -> tuple[Any, dict[Path_, Where]]:
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(
            str(path), mark.line + 1 if mark else None, f"malformed YAML: {problem}"
        ) from exc
    lines: dict[Path_, Where] = {}
    if node is None:
        return {}, lines
    data = _build(node, (), lines, str(path))
    return data, lines


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, Where], file: str) -> Any:
    lines.setdefault(path, (file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise YamlSyntaxError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            lines[(*path, str(key))] = (file, key_node.start_mark.line + 1)
            out[str(key)] = _build(value_node, (*path, str(key)), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, str(i)), lines, file) for i, v in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
