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
blocks of `hash_block_tokens`; a block's id names its content (computed for all turns at once with
numpy: 100,000 sessions take about a second). A full block j of a session has
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


def prompt_lengths(system_tokens: int, inputs: np.ndarray, answers: np.ndarray, first: np.ndarray, sid: np.ndarray) -> np.ndarray:
    """P_k of every drawn turn: system + the session's inputs up to k + its answers before k
    (`first`: each session's first turn, `sid`: each turn's session)."""
    inputs_so_far = np.cumsum(inputs)
    answers_before = np.cumsum(answers) - answers
    return system_tokens + inputs_so_far - (inputs_so_far - inputs)[first][sid] + answers_before - answers_before[first][sid]


def turns_that_fit(prompts: np.ndarray, answers: np.ndarray, pos: np.ndarray, first: np.ndarray, turns: np.ndarray,
                   max_total_tokens: int | None) -> np.ndarray:
    """Per session, how many leading turns fit: the first turn longer than the limit ends it."""
    if max_total_tokens is None:
        return turns.copy()
    too_long_at = np.where(prompts + answers > max_total_tokens, pos, np.iinfo(np.int64).max)
    return np.minimum(np.minimum.reduceat(too_long_at, first), turns)  # every session has >= 1 drawn turn


def block_hash_ids(prompts: np.ndarray, sid: np.ndarray, turns: np.ndarray, system_tokens: int, block_tokens: int) -> list[np.ndarray]:
    """Ids of each prompt's blocks (prompts in session order, `sid` their sessions, `turns` per
    session). Ids: the shared system-prompt blocks 0 .. system//B - 1; then each session's other
    full blocks, session after session; then one id per partial last block, turn after turn. Every
    array is a read-only view of one flat array."""
    shared = system_tokens // block_tokens
    full = prompts // block_tokens
    partial = (prompts % block_tokens > 0).astype(np.int64)
    last = np.cumsum(turns) - 1  # each session's last turn (full blocks only grow)
    fresh = np.where(turns > 0, full[np.maximum(last, 0)] - shared, 0) if len(prompts) else np.zeros_like(turns)
    base = shared + np.cumsum(fresh) - fresh  # first id of each session's own full blocks
    partial_id = shared + fresh.sum() + np.cumsum(partial) - 1
    offsets = np.concatenate([[0], np.cumsum(full + partial)])
    turn_of = np.repeat(np.arange(len(prompts)), full + partial)
    j = np.arange(offsets[-1]) - offsets[turn_of]  # block index inside its prompt
    flat = np.where(j < shared, j, base[sid[turn_of]] + j - shared)
    last_partial = j >= full[turn_of]  # only a partial last block lies past the full ones
    flat[last_partial] = partial_id[turn_of[last_partial]]
    flat.flags.writeable = False
    bounds = offsets.tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def assemble(spec: SessionsConfig, turns: np.ndarray, inputs: np.ndarray, answers: np.ndarray, think_s: np.ndarray,
             start_s: np.ndarray | None, max_total_tokens: int | None):
    """(prompt, answer, block hash ids, plan) of the turns sent, from per-drawn-turn draws in
    session order (`inputs`, `answers` (capped), `think_s` each have turns.sum() entries)."""
    first = np.cumsum(turns) - turns
    sid = np.repeat(np.arange(len(turns)), turns)
    pos = np.arange(len(sid)) - first[sid]  # turn number inside its session
    prompts = prompt_lengths(spec.system_prompt_tokens, inputs, answers, first, sid)
    kept = turns_that_fit(prompts, answers, pos, first, turns, max_total_tokens)
    keep = pos < kept[sid]
    prompt, answer, think, kept_sid = prompts[keep], answers[keep], think_s[keep].copy(), sid[keep]
    kept_first = np.cumsum(kept) - kept
    think[kept_first[kept > 0]] = 0.0  # turn 0 of a session is sent at its start
    ids = block_hash_ids(prompt, kept_sid, kept, spec.system_prompt_tokens, spec.hash_block_tokens)
    plan = SessionPlan(kept_first.astype(np.int64), kept.astype(np.int64), turns.astype(np.int64), think, start_s, kept_sid)
    return prompt.astype(np.int64), answer.astype(np.int64), ids, plan
