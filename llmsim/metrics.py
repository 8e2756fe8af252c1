"""Per-request latency records, SLA verdicts, and the run summary (docs/schedulers.md §3).

Definitions (vLLM's and the Past-Future paper's):
- TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), undefined for
  one-token outputs; max TBT = the largest gap between consecutive tokens of a request (an eviction
  shows up here); E2E = finish - arrival; queueing delay = first admission - arrival.
- A request is good if it finished and met every SLA threshold that is set (an undefined TPOT
  meets a TPOT threshold).
- goodput_rps: good requests per second (DistServe); goodput_tps: prompt + output tokens of good
  requests per second (the paper's Figure 7). Both over the run's duration: first arrival to last
  finish (or last drop or abort). SLA attainment = good / all requests (each closed-loop re-send
  counts as a request).
- KV utilisation: time-weighted mean over the run of used / total blocks across replicas, and the
  peak of any replica.
- Prefix cache (with `engine.prefix_caching`, `prefix_cache_summary`): hit rate in tokens = cached
  prompt tokens / tokens to prefill, in blocks = cached blocks / full blocks of those tokens, over
  every admitted prefill, overall and per replica; `cached_prompt_tokens` per request (its first).
- Attempts and wasted work (for closed-loop re-sends, the Past-Future artifact's clients): an
  original request is a workload request (`origin_id`); each send of it is an attempt.
  Wasted work is the prefill and decode tokens computed for attempts that did not count (not
  good: missed the SLA, dropped or aborted), plus the re-prefill of good attempts after an
  eviction (recompute). `wasted_gpu_s` charges the replicas' busy time to tokens evenly: an
  estimate (a decode token in a large batch costs less than one in a small one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .request import FINISHED, OUTCOMES, RequestTable

LATENCY_METRICS = ("ttft_s", "tpot_s", "max_tbt_s", "e2e_s", "queue_delay_s")
SLA_FIELDS = ("ttft_s", "tpot_s", "max_tbt_s", "e2e_s")


def _outcome_names(status: np.ndarray) -> np.ndarray:
    """The outcome name of each status code (an object array of str, as a list would give;
    one lookup instead of a Python loop over every request)."""
    codes = np.asarray(status, dtype=np.int64)
    names = np.array(["unfinished"] * (max(OUTCOMES) + 2), dtype=object)
    for code, name in OUTCOMES.items():
        names[code] = name
    # codes outside the table (none today) read "unfinished", the last entry
    return names[np.where((codes >= 0) & (codes <= max(OUTCOMES)), codes, len(names) - 1)]


def request_frame(table: RequestTable, sla: dict[str, float | None]) -> pd.DataFrame:
    """One row per request: trace fields, latencies, evictions, replica, outcome, SLA verdict.
    The columns that are the table's own (prompt_tokens, end_s, ...) share its arrays: the
    table is final when this runs, and not copying them keeps the run's peak memory down."""
    c = table.column
    status = c("status")
    finished = status == FINISHED
    out = c("generated_tokens")
    arrival = c("arrival_s")
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(finished & (out > 1), (c("finish_s") - c("first_token_s")) / (out - 1), np.nan)
    df = pd.DataFrame(
        {
            "request_id": np.arange(len(table)),
            "origin_id": c("origin_id"),
            "attempt": c("attempt"),
            "client": c("client"),
            "replica": c("replica"),
            "arrival_s": arrival,
            "prompt_tokens": c("prompt_tokens"),
            "output_tokens": c("output_tokens"),
            "max_new_tokens": c("max_new_tokens"),
            "generated_tokens": out,
            "queue_delay_s": c("first_admit_s") - arrival,
            "ttft_s": c("first_token_s") - arrival,
            "tpot_s": tpot,
            "max_tbt_s": np.where(out > 1, c("max_tbt_s"), np.nan),
            "e2e_s": c("finish_s") - arrival,
            "end_s": c("end_s"),  # when it finished, or was dropped or aborted (simulated time)
            "evictions": c("evictions"),
            "swaps": c("swaps"),
            # prefill tokens computed, re-prefills after evictions included, and those beyond the prompt
            "prefill_tokens": c("prefill_computed_tokens"),
            "recompute_tokens": np.maximum(c("prefill_computed_tokens") - c("prompt_tokens"), 0),
            # prompt tokens its first prefill found in the prefix cache (0 without prefix caching)
            "cached_prompt_tokens": c("cached_prompt_tokens"),
            "outcome": _outcome_names(status),
            "finished": finished,
        },
        # the table is final here: its columns are taken as they are, not copied into one block
        # per dtype (that copy was the simulation's peak: 334 -> 310 MiB at 200k requests on 64
        # replicas, docs/performance.md)
        copy=False,
    )
    good = finished.copy()
    for name in SLA_FIELDS:
        limit = sla.get(name)
        if limit is not None:
            v = df[name].to_numpy()
            good &= np.isnan(v) | (v <= limit) if name in ("tpot_s", "max_tbt_s") else (v <= limit)
    df["good"] = good
    return df


def good_checker(table: RequestTable, sla: dict[str, float | None]):
    """A function rid -> bool: did this finished request meet every SLA threshold? (Used by
    closed-loop clients deciding to re-send; same rule as `request_frame`.)"""
    limits = {k: v for k, v in sla.items() if v is not None}

    def is_good(rid: int) -> bool:
        if table.status[rid] != FINISHED:
            return False
        arrival, out = table.arrival_s[rid], table.generated_tokens[rid]
        values = {"ttft_s": table.first_token_s[rid] - arrival, "e2e_s": table.finish_s[rid] - arrival}
        if out > 1:
            values["tpot_s"] = (table.finish_s[rid] - table.first_token_s[rid]) / (out - 1)
            values["max_tbt_s"] = table.max_tbt_s[rid]
        return all(values.get(k, 0.0) <= v for k, v in limits.items())

    return is_good


def _dist(values: np.ndarray) -> dict[str, float | None]:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(v.mean()), "max": float(v.max())}


def summarize(df: pd.DataFrame, replica_stats: Sequence, total_blocks: int, end_s: np.ndarray) -> dict:
    """Headline numbers of a run (units in the key names); `end_s`: when each request ended."""
    n = len(df)
    fin = df["finished"].to_numpy()
    good = df["good"].to_numpy()
    start = float(df["arrival_s"].min()) if n else 0.0
    end = float(np.nanmax(end_s)) if len(end_s) and not np.isnan(end_s).all() else start
    duration = max(end - start, 1e-12)
    good_tokens = int((df["prompt_tokens"] + df["generated_tokens"])[good].sum())
    out_tokens = int(df["generated_tokens"].sum())
    evictions = int(df["evictions"].sum())
    kv_block_s = sum(s.kv_block_s for s in replica_stats)
    summary = {
        "num_requests": n,
        "num_finished": int(fin.sum()),
        "num_good": int(good.sum()),
        "duration_s": duration,
        "goodput_rps": good.sum() / duration,
        "goodput_tps": good_tokens / duration,
        "sla_attainment": float(good.sum() / n) if n else 0.0,
        "throughput_rps": fin.sum() / duration,
        "throughput_tps": out_tokens / duration,
        "throughput_total_tps": (out_tokens + int(df["prompt_tokens"][fin].sum())) / duration,
        "dropped": int((df["outcome"] == "dropped").sum()),
        "aborted": int((df["outcome"] == "aborted").sum()),
        "evictions": evictions,
        "eviction_rate": evictions / max(int(fin.sum()), 1),
        "evicted_requests": int((df["evictions"] > 0).sum()),
        "swaps": int(df["swaps"].sum()),
        "kv_util_mean": kv_block_s / (total_blocks * len(replica_stats) * duration) if replica_stats else 0.0,
        "kv_util_peak": max((s.peak_used_blocks for s in replica_stats), default=0) / total_blocks,
    }
    summary.update(_wasted_work(df, good, sum(s.busy_s for s in replica_stats)))
    for name in LATENCY_METRICS:
        summary[name] = _dist(df.loc[fin, name].to_numpy(dtype=float))
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in summary.items()}


def prefix_cache_summary(replica_stats: Sequence, evicted_blocks: Sequence[int]) -> dict:
    """Prefix-cache hit rates (engine.prefix_caching), overall and per replica: over every
    admitted prefill (re-prefills after evictions included), cached tokens / tokens to prefill,
    and cached blocks / full blocks of those tokens; `evicted_blocks`: cached blocks each replica
    evicted to make room."""
    def rates(stats) -> dict:
        q_tok = sum(s.prefix_query_tokens for s in stats)
        h_tok = sum(s.prefix_hit_tokens for s in stats)
        q_blk = sum(s.prefix_query_blocks for s in stats)
        h_blk = sum(s.prefix_hit_blocks for s in stats)
        return {"hit_rate_tokens": h_tok / q_tok if q_tok else 0.0, "hit_rate_blocks": h_blk / q_blk if q_blk else 0.0,
                "query_tokens": q_tok, "hit_tokens": h_tok, "query_blocks": q_blk, "hit_blocks": h_blk}

    per_replica = [{**rates([s]), "evicted_blocks": int(e)} for s, e in zip(replica_stats, evicted_blocks)]
    return {**rates(replica_stats), "evicted_blocks": int(sum(evicted_blocks)), "per_replica": per_replica}


def _wasted_work(df: pd.DataFrame, good: np.ndarray, busy_s: float) -> dict:
    """Attempts per original request and the work spent on what did not count (module docstring)."""
    origins = max(int(df["origin_id"].nunique()), 1) if len(df) else 1
    prefill = df["prefill_tokens"].to_numpy()
    decode = df["generated_tokens"].to_numpy()
    wasted_prefill = int(prefill[~good].sum() + df["recompute_tokens"].to_numpy()[good].sum())
    wasted_decode = int(decode[~good].sum())
    total = int(prefill.sum() + decode.sum())
    fraction = (wasted_prefill + wasted_decode) / total if total else 0.0
    return {
        "num_origins": origins if len(df) else 0,
        "attempts_per_request": len(df) / origins,
        "evictions_per_request": int(df["evictions"].sum()) / origins,
        "prefill_tokens": int(prefill.sum()),
        "decode_tokens": int(decode.sum()),
        "wasted_prefill_tokens": wasted_prefill,
        "wasted_decode_tokens": wasted_decode,
        "wasted_work_fraction": fraction,
        "wasted_gpu_s": busy_s * fraction,
    }


SUMMARY_LABELS = {
    "goodput_rps": "requests/s that finished within every SLA threshold (DistServe goodput)",
    "goodput_tps": "prompt + output tokens/s of requests within the SLA (Past-Future paper, Fig. 7)",
    "throughput_tps": "output tokens/s generated",
    "throughput_total_tps": "prompt + output tokens/s of finished requests",
    "sla_attainment": "good requests / all requests",
    "eviction_rate": "evictions per finished request",
    "kv_util_mean": "time-weighted mean of used / total KV blocks, first arrival to last finish",
    "duration_s": "first arrival to last finish, simulated seconds",
    "attempts_per_request": "sends per original request (closed-loop re-sends)",
    "evictions_per_request": "evictions per original request",
    "wasted_work_fraction": "prefill + decode tokens of attempts that did not count, and re-prefills after evictions, / all",
    "wasted_gpu_s": "replica busy seconds times the wasted fraction (an estimate: tokens charged evenly)",
}
