"""Builders of the hostile-input cases of tests/test_hostile_inputs.py: each returns a function that
writes the case's files into a temporary folder and returns the llmsim argv. The base scenario is
tiny and priced by the constant cost model, so a case that is wrongly accepted runs in a fraction
of a second. Units: as in the scenario keys (seconds, tokens, requests per second).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import yaml

from llmsim.cli import main

INF, NAN = float("inf"), float("nan")
BASE: dict[str, Any] = {
    "name": "hostile", "seed": 0, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
    "cost_model": {"kind": "constant", "step_time_s": 0.01},
    "workload": {"lengths": {"kind": "fixed", "input_tokens": 100, "output_tokens": 20},
                 "arrivals": {"kind": "poisson", "rate_per_s": 2.0}, "num_requests": 20, "max_new_tokens": 64},
    "sla": {"ttft_s": 10.0, "max_tbt_s": 1.5},
}
GAMMA = {"kind": "gamma", "rate_per_s": 2.0, "cv": 2.0}
CLOSED = {"kind": "closed-loop", "clients": 4}
LOGNORMAL = {"kind": "lognormal", "input_tokens": {"median": 100, "sigma": 0.5}, "output_tokens": {"median": 20, "sigma": 0.5}}
UNIFORM = {"kind": "uniform", "input_tokens": [10, 100], "output_tokens": [5, 20]}
TABLE_HEADER = "num_prefill_tokens,num_decode_tokens\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
Builder = Callable[[Path], list]


# ------------------------------------------------------------------------------------ builders
def scenario_file(tmp: Path, edits: dict) -> str:
    data = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = data
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    p = tmp / "s.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def write_file(tmp: Path, name: str, content: str | bytes) -> str:
    p = tmp / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def run(edits: dict | None = None, *extra: str) -> Builder:
    return lambda t: ["run", scenario_file(t, edits or {}), "--out", str(t / "out"), *extra]


def validate(edits: dict | None = None, *extra: str) -> Builder:
    return lambda t: ["validate", scenario_file(t, edits or {}), *extra]


def raw_scenario(content: str | bytes, command: str = "run") -> Builder:
    out = ["--out", "out"] if command == "run" else []
    return lambda t: [command, write_file(t, "s.yaml", content), *out]


def table_lengths(rows: str | bytes) -> Builder:
    """A run whose lengths come from a length table with these rows (after the header)."""
    def build(t: Path) -> list:
        data = rows if isinstance(rows, bytes) else (TABLE_HEADER + rows).encode()
        path = write_file(t, "lengths.csv", data)
        return run({"workload.lengths": {"kind": "table", "path": path}})(t)
    return build


def sweep(*args: str, edits: dict | None = None) -> Builder:
    return lambda t: ["sweep", scenario_file(t, edits or {}), "--executor", "local:1", "--no-plots", "--out", str(t / "out"), *args]


def capacity(*args: str) -> Builder:
    return lambda t: ["capacity", scenario_file(t, {}), "--executor", "local:1", "--seeds", "1", "--out", str(t / "out"), *args]


def compare(*args: str, edits: dict | None = None) -> Builder:
    return lambda t: ["compare", scenario_file(t, edits or {}), "--executor", "local:1", "--out", str(t / "out.csv"), *args]


def step_time(*args: str) -> Builder:
    return lambda t: ["step-time", "--model", "llama-2-7b", "--hardware", "h100-80g-sxm", *args]


def batch_file(content: str | bytes) -> Builder:
    return lambda t: step_time("--batch", write_file(t, "batch.yaml", content))(t)


def convert(content: str | bytes, *args: str, name: str = "trace.csv") -> Builder:
    return lambda t: ["trace", "convert", write_file(t, name, content), str(t / "out.csv"), *args]


def stats(content: str | bytes, name: str = "trace.csv") -> Builder:
    return lambda t: ["trace", "stats", write_file(t, name, content)]


OLD_SUMMARY = '{"scenario": "x", "scheduler": "aggressive", "sla": {}}'  # an older llmsim: no run id to check
REQUESTS_HEADER = "request_id,arrival_s,prompt_tokens,output_tokens,finished,ttft_s,max_tbt_s,e2e_s\n"


def plot_run(files: dict[str, str | bytes]) -> Builder:
    def build(t: Path) -> list:
        folder = t / "runs" / "r"
        folder.mkdir(parents=True)
        for name, content in files.items():
            write_file(folder, name, content)
        return ["plot", str(folder)]
    return build


def plot_edited_after_the_run(t: Path) -> list:
    (t / "runs").mkdir()
    assert main(["run", scenario_file(t, {}), "--quiet", "--out", str(t / "runs" / "r")]) == 0
    with open(t / "runs" / "r" / "requests.csv", "a") as f:
        f.write("9999,0,1,1,True,0.1,0.1,0.1\n")
    return ["plot", str(t / "runs" / "r")]
