"""Error text for a scenario that fails validation: one `LlmsimError` line per problem.

`format_errors` turns a pydantic `ValidationError` into lines ``<where>: <what>``, where <where> is
the scenario file and line of the offending key (found in the YAML node tree from
llmsim.config_loading), the `--set` / `--scheduler` option that set it, or "scenario" for a dict
built in code. An unknown key gets a did-you-mean suggestion from the keys its section allows,
following discriminated unions by the section's `kind`. The schema is passed in (the root model
and the discriminated unions), so this module does not import llmsim.config.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import closest, did_you_mean


def _data_path(loc: tuple, data: Any, tags: set[str]) -> list:
    """The pydantic error location as keys into the raw data (drops union tags)."""
    out, cur = [], data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and not (isinstance(cur, dict) and part in tags):
            out.append(part)  # a missing or unknown key: keep it for the message
            cur = None
    return out


def _union_tags(unions: tuple) -> set[str]:
    """The `kind` values of every member of the discriminated unions (pydantic puts them in `loc`)."""
    tags = set()
    for union in unions:
        for member in union.__origin__.__args__ if hasattr(union, "__origin__") else ():
            tags.update(member.model_fields["kind"].annotation.__args__)
    return tags


def _line(node, keys: list) -> int | None:
    """Line (1-based) of the deepest key of `keys` found in the YAML node tree."""
    line = None
    for k in keys:
        if isinstance(node, yaml.MappingNode):
            for kn, vn in node.value:
                if kn.value == str(k):
                    line, node = kn.start_mark.line + 1, vn
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and k < len(node.value):
            node = node.value[k]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _models_in(annotation) -> list:
    """Pydantic model classes inside an annotation (through Optional, Annotated and Union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _model_at(keys: list, data: Any, root: type[BaseModel]):
    """The model class that validates the section at `keys`, following discriminated unions by the
    section's `kind` in the raw data; None if it cannot be told."""
    model: Any = root
    raw = data
    for k in keys:
        fields = getattr(model, "model_fields", {})
        field = fields.get(k) or {f.alias: f for f in fields.values() if f.alias}.get(k)
        if field is None:
            return None
        raw = raw.get(k) if isinstance(raw, dict) else None
        members = _models_in(field.annotation)
        if len(members) > 1:
            kind = raw.get("kind") if isinstance(raw, dict) else None
            members = [m for m in members if "kind" in m.model_fields and kind in typing.get_args(m.model_fields["kind"].annotation)]
        if len(members) != 1:
            return None
        model = members[0]
    return model


def _allowed_keys(keys: list, data: Any, root: type[BaseModel]) -> list[str]:
    model = _model_at(keys, data, root)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _override_source(keys: list, from_override: dict) -> str | None:
    """The option that set `keys` or a section above it (`--set engine={...}` sets every key in
    engine), the deepest one; None if the scenario file did."""
    for n in range(len(keys), 0, -1):
        source = from_override.get(tuple(keys[:n]))
        if source:
            return source
    return None


def format_errors(err: ValidationError, data, node, path, from_override, root: type[BaseModel], unions: tuple) -> str:
    """The message of `err`, one line per problem. `data` is the validated raw data, `node` its YAML
    node tree (None for a dict), `path` the scenario file (None for a dict), `from_override` maps a
    key tuple to the option that set it; `root` is the scenario model and `unions` its
    discriminated unions."""
    errors = err.errors()
    tags = _union_tags(unions)
    # A misspelt key also makes pydantic report the right key as missing: say it once, as a suggestion.
    suggested = set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            keys = _data_path(e["loc"], data, tags)
            match = closest(keys[-1], _allowed_keys(keys[:-1], data, root))
            if match:
                suggested.add((*keys[:-1], match))
    lines = []
    for e in errors:
        keys = _data_path(e["loc"], data, tags)
        if e["type"] == "missing" and tuple(keys) in suggested:
            continue
        dotted = ".".join(str(k) for k in keys) or "(top level)"
        source = _override_source(keys, from_override)
        line = _line(node, keys) if node is not None and not source else None
        where = source or (f"{path}:{line}" if path and line else (str(path) if path else "scenario"))
        if e["type"] == "extra_forbidden":
            parent, key = keys[:-1], keys[-1] if keys else ""
            hint = did_you_mean(key, _allowed_keys(parent, data, root))
            section = ".".join(map(str, parent)) or "the top level"
            lines.append(f"{where}: unknown key '{dotted}' in {section}{hint}")
        elif e["type"] == "missing":
            lines.append(f"{where}: missing required key '{dotted}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {dotted}: {msg}")
    return "\n".join(lines)
