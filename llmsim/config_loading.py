"""Reading a scenario file before validation: strict YAML, `--set` overrides, relative paths.

`read_yaml` parses a scenario file into plain data and keeps its YAML node tree (the error text in
llmsim.config_errors uses it to name lines); a duplicated key, a YAML syntax error or a file that
is not a mapping is an `LlmsimError` naming the file and line. `parse_override` and
`apply_override` apply `--set dotted.key=value` to that data, and `resolve_paths` makes relative
paths absolute: llmsim.config calls it against the scenario file's folder before the overrides
(paths written in the file) and against the working directory after them (paths given with
`--set`). Nothing here knows the schema: llmsim.config validates the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import LlmsimError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise LlmsimError(f"{self.name}:{key_node.start_mark.line + 1}: duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """(data, YAML node tree) of a scenario file; the data is always a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmsimError(f"{path}: no such scenario file") from None
    except UnicodeDecodeError as e:
        raise LlmsimError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "a scenario is a UTF-8 YAML file") from None
    except OSError as e:
        raise LlmsimError(f"{path}: cannot read: {e.strerror or e}") from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LlmsimError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise LlmsimError(f"{path}: a scenario must be a YAML mapping of keys to values")
    return data, node


def parse_override(text: str) -> tuple[list[str], Any]:
    """'engine.block_size=32' -> (['engine', 'block_size'], 32); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise LlmsimError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(data: dict, keys: list[str], value: Any, source: str) -> None:
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise LlmsimError(f"{source}: '{'.'.join(keys[: i + 1])}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def resolve_paths(data: dict, base_dir: Path) -> None:
    """Make the trace / table path and a model or hardware file path absolute, against `base_dir`."""
    workload = data.get("workload")
    for section in ("lengths", "trace"):
        src = workload.get(section) if isinstance(workload, dict) else None
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            p = Path(src["path"]).expanduser()
            src["path"] = str(p if p.is_absolute() else (base_dir / p).resolve())
    for key in ("model", "hardware"):
        v = data.get(key)
        if isinstance(v, str) and (v.endswith((".yaml", ".yml", ".json")) or "/" in v):
            p = Path(v).expanduser()
            data[key] = str(p if p.is_absolute() else (base_dir / p).resolve())
