"""Shared YAML loading for the model catalog and hardware profiles.

Reads a YAML mapping and validates it into a pydantic model, turning every failure (missing file,
bad YAML, unknown key, invalid value) into a one-line `LlmsimError` that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmsim.errors import LlmsimError, read_text

M = TypeVar("M", bound=BaseModel)


def looks_like_path(name_or_path: str | Path) -> bool:
    """A Path, anything with a separator, or a .yaml/.yml name is a path, not a catalog name."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or "\\" in text or text.endswith((".yaml", ".yml"))


def load_yaml_model(cls: type[M], path: Path, what: str) -> M:
    """Validate the YAML mapping in `path` as `cls`; `what` names the kind of file in errors."""
    path = Path(path)
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise LlmsimError(f"{what} file {path} is not valid YAML: {detail}") from None
    if not isinstance(data, dict):
        raise LlmsimError(f"{what} file {path} must hold a YAML mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise LlmsimError(format_validation_error(exc, path, what)) from None


def format_validation_error(exc: ValidationError, path: Path, what: str) -> str:
    """One line for the first error of `exc` (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{loc}' in {what} file {path}"
    elif first["type"] == "missing":
        message = f"missing key '{loc}' in {what} file {path}"
    else:
        message = f"invalid value for '{loc}' in {what} file {path}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message
