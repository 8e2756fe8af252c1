"""Batch schedulers (admission policies) and their registry, keyed by the YAML `kind`.

Adding a scheduler: one module that defines its config (a `SchedulerConfig` subclass) and a class
decorated with `@register(kind, Config, summary)`, plus its import below.
"""

from .base import (
    SCHEDULERS,
    BuildContext,
    Candidate,
    ReplicaView,
    RunningBatch,
    Scheduler,
    SchedulerConfig,
    build_scheduler,
    register,
)
from . import aggressive, conservative, oracle, past_future, reserve_peak  # noqa: F401  (registration)

__all__ = [
    "SCHEDULERS",
    "BuildContext",
    "Candidate",
    "ReplicaView",
    "RunningBatch",
    "Scheduler",
    "SchedulerConfig",
    "build_scheduler",
    "register",
]
