"""The one SimPy event loop: a client pool whatever the number of clients, and SimPy's public API."""

from __future__ import annotations

import re
import time
from pathlib import Path

from llmsim import scenario_from_dict, simulate


def test_a_hundred_million_closed_loop_clients_cost_what_their_busy_clients_cost():
    """One pool process, not a process per client: only clients that can be busy are started."""
    sc = {"name": "many", "seed": 0, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
          "engine": {"max_model_len": 4096, "kv_capacity_tokens": 60000},
          "scheduler": {"kind": "aggressive"},
          "workload": {"lengths": {"kind": "uniform", "input_tokens": [32, 256], "output_tokens": [10, 100]},
                       "arrivals": {"kind": "closed-loop", "clients": 100_000_000}, "num_requests": 40, "max_new_tokens": "exact"}}
    t0 = time.perf_counter()
    r = simulate(scenario_from_dict(sc))
    assert time.perf_counter() - t0 < 30  # generous: it takes well under a second; a hang never ends
    assert len(r.requests) == 40 and (r.requests.outcome == "finished").all()
    assert r.summary["max_in_flight"] == 40
    assert (r.requests.arrival_s == 0.0).all()  # every request went out at once, one per client


def test_the_simulation_writes_no_simpy_private_state():
    """Events are placed through env.timeout, env.schedule and events' callbacks lists, never by writing
    the environment's queue or event ids (as the removed plain loops' SimPy twin did)."""
    src = "\n".join(p.read_text() for p in Path(__file__).resolve().parents[1].joinpath("llmsim").rglob("*.py"))
    assert not re.search(r"\._queue\b|\._eid\b|\._now\b", src)
