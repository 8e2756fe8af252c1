"""Per-scheduler settings: a scenario's `per_scheduler` section.

    per_scheduler:
      aggressive:              # applied only when scheduler.kind is aggressive
        engine:
          sla_guard: {max_queue_s: null, max_tbt_s: null}
      conservative:
        engine: {max_num_seqs: 64}

The paper's artifact ran three servers with different settings (the guard was off on the
aggressive server); `run`, `compare` and `sweep` replay them from one file. Each entry is a
partial scenario, deep-merged over the scenario when that kind runs, after the file and any
`--set` (a per-scheduler value is the more specific one; change it with
`--set per_scheduler.<kind>.<key>=...`). Keys are scheduler kinds; an entry may not set
`scheduler.kind` or nest another `per_scheduler`. Every entry is validated whichever kind runs,
so a typo in one is reported at once.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import LlmsimError, did_you_mean

SECTION = "per_scheduler"


def merge(base: dict, overlay: dict) -> dict:
    """`base` with `overlay` merged in, mappings key by key (a new dict; inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def split(data: dict, known_kinds, where: str) -> tuple[dict, dict[str, dict]]:
    """(the scenario without its per_scheduler section, the section checked: kind -> entry)."""
    per = data.get(SECTION)
    rest = {k: v for k, v in data.items() if k != SECTION}
    if per is None:
        return rest, {}
    if not isinstance(per, dict):
        raise LlmsimError(f"{where}: {SECTION} must be a mapping of scheduler kind -> settings, got {per!r}")
    for kind, entry in per.items():
        if kind not in known_kinds:
            raise LlmsimError(f"{where}: unknown scheduler kind {kind!r} in {SECTION}{did_you_mean(str(kind), list(known_kinds))}")
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise LlmsimError(f"{where}: {SECTION}.{kind} must be a mapping of scenario settings, got {entry!r}")
        if SECTION in entry:
            raise LlmsimError(f"{where}: {SECTION}.{kind} may not contain another {SECTION}")
        if "kind" in (entry.get("scheduler") or {}):
            raise LlmsimError(f"{where}: {SECTION}.{kind}.scheduler.kind: the kind is the entry's key; remove it")
    return rest, {k: v or {} for k, v in per.items()}


def running_kind(data: dict, default: str) -> Any:
    """The scheduler kind a scenario's data runs (before validation)."""
    section = data.get("scheduler")
    return section.get("kind", default) if isinstance(section, dict) else default
