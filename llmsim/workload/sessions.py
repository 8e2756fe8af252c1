"""Multi-turn sessions: conversations whose turns grow one prompt, drawn whole before the run.

A session is a conversation of T turns. Turn k's prompt is turn k-1's prompt, turn k-1's answer
and a new user input (turn 0's prompt: an optional system prompt shared by every session, then the
first input):

    P_0 = system + u_0,    P_k = P_{k-1} + a_{k-1} + u_k

where u_k (new input) and a_k (answer, after the `max_new_tokens` cap) come from the scenario's
length distribution (`workload.lengths`: input_tokens = u, output_tokens = a). Everything is drawn
from the scenario seed before the run, turn by turn in session order; only send times depend on
the simulation (llmsim.cluster.session_load sends turn k+1 its think time after turn k ends).

Block hash ids (the prefix-cache interface, as in the Mooncake traces): each prompt is cut into
blocks of `hash_block_tokens`; a block's id names its content. A full block j of a session has
one id in every turn that contains it, so turn k+1's ids begin with turn k's full-block ids. A
prompt's last block may be partial; the next turn extends it with new tokens, so it is different
content and gets a new id (and so does every partial block: ids are never reused). Full blocks
inside the shared system prompt carry the same ids in every session (ids 0 .. system//B - 1);
every other id belongs to one session. Ids are int64 and unique over the workload.

The longest request a replica can run bounds a session: a turn whose prompt plus answer would
exceed it (`max_total_tokens`: engine.max_model_len, or the KV capacity) is not sent and ends the
session there (as a chat service refuses a conversation grown past the context window); such
sessions are counted in `SessionPlan.cut_by_length` and reported in the workload notes.

Units: tokens; think times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config_workload import SessionsConfig


@dataclass
class SessionPlan:
    """The sessions of a workload. Turn arrays of the Workload are flat, session after session;
    turn t of the workload is turn t - first_turn[s] of session s = session_of_turn[t]."""

    first_turn: np.ndarray  # int64 per session: index of its turn 0 in the workload's turn arrays
    turns: np.ndarray  # int64 per session: turns it sends (after the length cut; 0 if none fits)
    drawn_turns: np.ndarray  # int64 per session: turns drawn, before the cut
    think_s: np.ndarray  # float64 per turn: think time between the previous turn's end and this send (0 for turn 0)
    start_s: np.ndarray | None  # float64 per session: start time (open loop); None for closed loop
    session_of_turn: np.ndarray  # int64 per turn

    @property
    def cut_by_length(self) -> int:
        return int(np.count_nonzero(self.turns < self.drawn_turns))


def draw_turns(spec, rng: np.random.Generator, count: int) -> np.ndarray:
    """Turns per session (>= 1)."""
    if spec.kind == "fixed":
        return np.full(count, spec.turns, dtype=np.int64)
    if spec.kind == "uniform":
        return rng.integers(spec.min, spec.max + 1, count).astype(np.int64)
    return np.minimum(rng.geometric(1.0 / spec.mean, count), spec.max).astype(np.int64)


def draw_think_s(spec, rng: np.random.Generator, n: int) -> np.ndarray:
    """n think times in seconds."""
    if spec.kind == "fixed":
        return np.full(n, spec.value_s)
    if spec.kind == "exponential":
        values = rng.exponential(spec.mean_s, n)
        return values if spec.max_s is None else np.minimum(values, spec.max_s)
    values = np.maximum(spec.median_s * np.exp(spec.sigma * rng.standard_normal(n)), spec.min_s)
    return values if spec.max_s is None else np.minimum(values, spec.max_s)


def prompt_lengths(system_tokens: int, inputs: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """P_k of one session: system + sum of inputs up to k + sum of answers before k."""
    answered = np.concatenate([[0], np.cumsum(answers[:-1])]) if len(answers) else answers
    return system_tokens + np.cumsum(inputs) + answered


def turns_that_fit(prompts: np.ndarray, answers: np.ndarray, max_total_tokens: int | None) -> int:
    """How many leading turns fit: the first turn longer than the limit ends the session."""
    if max_total_tokens is None:
        return len(prompts)
    too_long = np.flatnonzero(prompts + answers > max_total_tokens)
    return int(too_long[0]) if len(too_long) else len(prompts)


class BlockIds:
    """Hands out block hash ids: shared system-prompt ids first, then a running counter."""

    def __init__(self, system_tokens: int, block_tokens: int) -> None:
        self.block_tokens = block_tokens
        self.shared = np.arange(system_tokens // block_tokens, dtype=np.int64)
        self.next_id = len(self.shared)

    def _fresh(self, k: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + k, dtype=np.int64)
        self.next_id += k
        return ids

    def session(self, prompts: np.ndarray) -> list[np.ndarray]:
        """Ids of each prompt of one session (prompts increasing). Full-block prefixes are views of
        one read-only array of the session's full blocks."""
        if len(prompts) == 0:
            return []
        b = self.block_tokens
        full_blocks = int(prompts[-1]) // b
        shared = self.shared[:full_blocks]
        full = np.concatenate([shared, self._fresh(full_blocks - len(shared))])
        full.flags.writeable = False
        out = []
        for p in prompts.tolist():
            f = p // b
            if p % b:  # a partial last block: content seen only in this prompt
                ids = np.concatenate([full[:f], self._fresh(1)])
                ids.flags.writeable = False
                out.append(ids)
            else:
                out.append(full[:f])
        return out


def assemble(spec: SessionsConfig, turns: np.ndarray, inputs: np.ndarray, answers: np.ndarray, think_s: np.ndarray,
             start_s: np.ndarray | None, max_total_tokens: int | None):
    """(prompt, answer, block hash ids, plan) of the turns sent, from per-drawn-turn draws in
    session order (`inputs`, `answers` (capped), `think_s` each have turns.sum() entries)."""
    ids = BlockIds(spec.system_prompt_tokens, spec.hash_block_tokens)
    bounds = np.concatenate([[0], np.cumsum(turns)])
    prompts, kept_answers, kept_think, hash_ids = [], [], [], []
    kept = np.zeros(len(turns), dtype=np.int64)
    for s in range(len(turns)):
        lo, hi = bounds[s], bounds[s + 1]
        p = prompt_lengths(spec.system_prompt_tokens, inputs[lo:hi], answers[lo:hi])
        k = turns_that_fit(p, answers[lo:hi], max_total_tokens)
        kept[s] = k
        prompts.append(p[:k])
        kept_answers.append(answers[lo:lo + k])
        kept_think.append(think_s[lo:lo + k])
        hash_ids.extend(ids.session(p[:k]))
    think = np.concatenate(kept_think) if len(turns) else np.zeros(0)
    first = np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(np.int64)
    think[first[kept > 0]] = 0.0  # turn 0 of a session is sent at its start
    plan = SessionPlan(first, kept, turns.astype(np.int64), think, start_s,
                       np.repeat(np.arange(len(turns), dtype=np.int64), kept))
    return (np.concatenate(prompts).astype(np.int64), np.concatenate(kept_answers).astype(np.int64), hash_ids, plan)
