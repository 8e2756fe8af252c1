"""Multi-turn sessions: prompts and block hash ids drawn from the seed (llmsim.workload.sessions),
and their sends in simulated time (llmsim.cluster.session_load)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.cluster.build import longest_request_tokens, resolve
from llmsim.config import load_scenario
from llmsim.config_workload import SessionsConfig
from llmsim.errors import LlmsimError
from llmsim.workload import build_workload
from llmsim.workload.sessions import assemble

BASE = {
    "name": "sessions", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
    "engine": {"max_model_len": 4096, "kv_capacity_tokens": 60000},
    "scheduler": {"kind": "aggressive"},
    "workload": {
        "lengths": {"kind": "uniform", "input_tokens": [20, 300], "output_tokens": [10, 200]},
        "arrivals": {"kind": "poisson", "rate_per_s": 2.0},
        "sessions": {"count": 30, "turns": {"kind": "geometric", "mean": 4, "max": 12},
                     "think_time": {"kind": "exponential", "mean_s": 4.0}, "system_prompt_tokens": 700, "hash_block_tokens": 64},
        "max_new_tokens": 150,
    },
}


def scenario(**workload) -> dict:
    sc = copy.deepcopy(BASE)
    sc["workload"].update(workload)
    return sc


def workload_of(sc: dict):
    loaded = scenario_from_dict(sc)
    return build_workload(loaded.scenario.workload, loaded.scenario.seed, longest_request_tokens(loaded.scenario, resolve(loaded)))


def test_prompts_and_hash_ids_by_hand():
    """Blocks of 4 tokens, a 5-token system prompt (one full shared block, id 0).
    Session 0: inputs 2, 4, 3 and answers 2, 5, 1 give prompts 7, 13, 21;
    session 1: input 1, answer 1 gives prompt 6."""
    spec = scenario_from_dict(scenario(sessions={"count": 2, "turns": {"kind": "fixed", "turns": 1},
                                                 "system_prompt_tokens": 5, "hash_block_tokens": 4})).scenario.workload.sessions
    turns = np.array([3, 1])
    prompt, answer, ids, plan = assemble(spec, turns, np.array([2, 4, 3, 1]), np.array([2, 5, 1, 1]), np.array([0.0, 1.5, 2.5, 9.0]), None, None)
    assert prompt.tolist() == [7, 13, 21, 6] and answer.tolist() == [2, 5, 1, 1]
    # session 0's full blocks: 0 (shared), then 1..4; partial last blocks get fresh ids 5, 6, 7
    assert [a.tolist() for a in ids] == [[0, 5], [0, 1, 2, 6], [0, 1, 2, 3, 4, 7], [0, 8]]
    assert plan.first_turn.tolist() == [0, 3] and plan.turns.tolist() == [3, 1]
    assert plan.think_s.tolist() == [0.0, 1.5, 2.5, 0.0]  # turn 0 of a session is sent at its start
    assert plan.session_of_turn.tolist() == [0, 0, 0, 1]


def test_a_turn_longer_than_the_limit_ends_its_session():
    spec = scenario_from_dict(scenario()).scenario.workload.sessions
    # prompts 2, 4+2+... : session 0 turns (2,1),(3,4),(5,1): prompts 702, 706, 715 with system 700
    prompt, answer, ids, plan = assemble(spec, np.array([3, 1]), np.array([2, 3, 5, 800]), np.array([1, 4, 1, 1]), np.zeros(4), None, 710)
    assert prompt.tolist() == [702, 706] and plan.turns.tolist() == [2, 0] and plan.drawn_turns.tolist() == [3, 1]
    assert plan.cut_by_length == 2 and len(ids) == 2


def test_each_turn_starts_with_the_previous_turns_full_blocks():
    wl = workload_of(scenario())
    b, plan = wl.hash_block_tokens, wl.sessions
    assert b == 64 and len(wl.block_hash_ids) == len(wl)
    partial_ids = []
    for t, ids in enumerate(wl.block_hash_ids):
        p = int(wl.prompt_tokens[t])
        assert len(ids) == math.ceil(p / b)
        assert ids[:700 // b].tolist() == list(range(700 // b))  # the shared system prompt
        if p % b:
            partial_ids.append(int(ids[-1]))
        s = plan.session_of_turn[t]
        if t + 1 < plan.first_turn[s] + plan.turns[s]:
            nxt = wl.block_hash_ids[t + 1]
            new_input = wl.prompt_tokens[t + 1] - p - wl.output_tokens[t]  # previous prompt + its answer + new input
            assert 20 <= new_input <= 300  # workload.lengths.input_tokens
            assert nxt[: p // b].tolist() == ids[: p // b].tolist()
            if p % b:
                assert nxt[p // b] != ids[p // b]  # a partial block, extended: new content, new id
    ids, times = np.unique(np.concatenate(wl.block_hash_ids), return_counts=True)
    assert len(partial_ids) > 10 and (times[np.searchsorted(ids, partial_ids)] == 1).all()  # a partial block is in one prompt
    # ids of different sessions meet only in the shared system prompt
    owners: dict[int, set] = {}
    for t, block_ids in enumerate(wl.block_hash_ids):
        for i in block_ids.tolist():
            owners.setdefault(i, set()).add(int(plan.session_of_turn[t]))
    shared = {i for i, o in owners.items() if len(o) > 1}
    assert shared == set(range(700 // b))


def test_sessions_are_drawn_from_the_seed():
    a, b, c = workload_of(scenario()), workload_of(scenario()), workload_of({**scenario(), "seed": 4})
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens) and np.array_equal(a.output_tokens, b.output_tokens)
    assert np.array_equal(a.sessions.think_s, b.sessions.think_s) and np.array_equal(a.sessions.start_s, b.sessions.start_s)
    assert all(np.array_equal(i, j) for i, j in zip(a.block_hash_ids, b.block_hash_ids))
    assert not np.array_equal(a.sessions.turns, c.sessions.turns) or not np.array_equal(a.prompt_tokens[:20], c.prompt_tokens[:20])


def _turn_sends_follow_ends(sc: dict) -> object:
    r = simulate(scenario_from_dict(sc))
    wl = workload_of(sc)
    df = r.requests.set_index("origin_id")
    plan = wl.sessions
    checked = 0
    for t in df.index:
        s = plan.session_of_turn[t]
        if t + 1 in df.index and plan.session_of_turn[t + 1] == s:
            # turn k+1 goes out exactly its think time after turn k ends
            assert df.at[t + 1, "arrival_s"] == df.at[t, "end_s"] + plan.think_s[t + 1]
            checked += 1
    assert checked > 20
    assert (df["prompt_tokens"].to_numpy() == wl.prompt_tokens[df.index.to_numpy()]).all()
    return r


def test_turn_k_plus_1_is_sent_think_time_after_turn_k_ends_open_loop():
    r = _turn_sends_follow_ends(scenario())
    wl = workload_of(scenario())
    starts = r.requests[r.requests.turn == 0].set_index("session")["arrival_s"]
    assert np.array_equal(starts.to_numpy(), wl.sessions.start_s[starts.index.to_numpy()])
    c = r.summary["sessions"]
    assert c["started"] == c["completed"] + c["failed"] + c["cut_by_max_model_len"] + c["cut_by_run_end"]
    assert len(r.requests) == int(wl.sessions.turns.sum()) and c["completed"] + c["cut_by_max_model_len"] == 30


def test_turn_k_plus_1_is_sent_think_time_after_turn_k_ends_closed_loop():
    sc = scenario(arrivals={"kind": "closed-loop", "clients": 4, "think_time_s": 1.0})
    r = _turn_sends_follow_ends(sc)
    assert r.summary["max_in_flight"] <= 4
    # a slot starts its next session think_time_s after its session's last turn ends
    ends = r.requests.groupby("session")["end_s"].max().sort_values()
    firsts = r.requests[r.requests.turn == 0].set_index("session")["arrival_s"].sort_index()
    assert (firsts.iloc[:4] == 0.0).all() and set((firsts.iloc[4:] - 1.0).round(12)) <= set(ends.round(12))


def test_a_hundred_million_session_slots_cost_what_their_sessions_cost():
    sc = scenario(arrivals={"kind": "closed-loop", "clients": 100_000_000},
                  sessions={"count": 25, "turns": {"kind": "fixed", "turns": 2}})
    r = simulate(scenario_from_dict(sc))
    assert r.summary["max_in_flight"] == 25 and len(r.requests) == 50
    assert (r.requests[r.requests.turn == 0].arrival_s == 0.0).all()


def test_a_failed_turn_ends_its_session_and_is_counted():
    sc = scenario(arrivals={"kind": "all-at-once"}, sessions={"count": 60, "turns": {"kind": "fixed", "turns": 3}})
    sc["engine"].update(max_num_seqs=4, sla_guard={"max_queue_s": 0.2})
    r = simulate(scenario_from_dict(sc))
    df = r.requests
    failed = df[df.outcome != "finished"]
    assert len(failed) > 0
    assert r.summary["sessions"]["failed"] == failed.session.nunique() == len(failed)
    last_turn = df.groupby("session")["turn"].max()
    assert (last_turn[failed.session].to_numpy() == failed.turn.to_numpy()).all()  # nothing sent after a failure
    assert any("dropped or aborted turn" in n for n in r.notes)


def test_duration_stops_sends_and_counts_cut_sessions():
    sc = scenario(arrivals={"kind": "closed-loop", "clients": 3}, duration_s=20.0)
    r = simulate(scenario_from_dict(sc))
    c = r.summary["sessions"]
    assert (r.requests.arrival_s < 20.0).all() and c["not_started"] > 0
    assert c["started"] == c["completed"] + c["failed"] + c["cut_by_max_model_len"] + c["cut_by_run_end"]
    assert c["sessions"] == c["started"] + c["not_started"] + c["first_turn_too_long"]


def test_num_requests_caps_the_turns_sent():
    r = simulate(scenario_from_dict(scenario(num_requests=25)))
    c = r.summary["sessions"]
    assert len(r.requests) == 25 and c["cut_by_run_end"] + c["not_started"] > 0
    assert c["started"] == c["completed"] + c["failed"] + c["cut_by_max_model_len"] + c["cut_by_run_end"]


def test_the_length_cut_is_reported_and_every_sent_turn_fits():
    sc = scenario(sessions={"count": 30, "turns": {"kind": "fixed", "turns": 10}, "system_prompt_tokens": 700})
    sc["engine"]["max_model_len"] = 2500
    r = simulate(scenario_from_dict(sc))
    assert ((r.requests.prompt_tokens + r.requests.output_tokens) <= 2500).all()
    assert r.summary["sessions"]["cut_by_max_model_len"] == 30
    assert any("sessions end early" in n and "2,500 tokens" in n for n in r.notes)


@pytest.mark.parametrize("change, words", [
    ({"sessions": {"count": 3, "turn": {"kind": "fixed", "turns": 2}}}, ["turn", "did you mean 'turns'"]),
    ({"sessions": {"count": 3, "turns": {"kind": "geometric", "mean": 0.5}}}, ["sessions.turns", "mean", "greater than or equal to 1"]),
    ({"sessions": {"count": 3, "turns": {"kind": "uniform", "min": 4, "max": 2}}}, ["min (4) must not be above max (2)"]),
    ({"sessions": {"count": 3, "turns": {"kind": "poisson", "mean": 2}}}, ["sessions.turns", "poisson"]),
    ({"sessions": {"count": 3, "turns": {"kind": "fixed", "turns": 2}, "think_time": {"kind": "exponential", "mean": 2}}},
     ["think_time", "mean", "did you mean 'mean_s'"]),
    ({"sessions": {"count": 0, "turns": {"kind": "fixed", "turns": 2}}}, ["sessions.count"]),
    ({"trace": {"path": "x.csv"}}, ["cannot replay workload.trace"]),
    ({"arrivals": {"kind": "closed-loop", "clients": 2, "resend_failed": True}}, ["a failed turn ends its session"]),
])
def test_bad_session_settings_are_named(tmp_path: Path, change: dict, words: list[str]):
    import yaml

    sc = scenario(**change)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(sc, sort_keys=False))
    with pytest.raises(LlmsimError) as e:
        load_scenario(p)
    assert str(p) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_fast_forward_changes_nothing_for_sessions():
    """Sends after a turn's end (and session starts) cut fast-forwarded runs exactly where step-by-step
    mode would first see them: the same requests, bit for bit."""
    frames = []
    for ff in (True, False):
        sc = scenario(arrivals={"kind": "poisson", "rate_per_s": 4.0})
        sc["engine"]["fast_forward"] = ff
        frames.append(simulate(scenario_from_dict(sc)).requests)
    assert frames[0].equals(frames[1])


def test_the_shipped_mooncake_synthetic_trace_has_a_hash_id_per_512_tokens():
    from llmsim.workload.readers import read_trace

    t = read_trace(Path(__file__).resolve().parents[1] / "traces/mooncake/synthetic_trace.jsonl")
    assert len(t.prompt_tokens) == 3993
    assert all(len(h) == math.ceil(p / 512) for h, p in zip(t.hash_ids, t.prompt_tokens.tolist()))


def _reference_session_ids(prompts_by_session: list[list[int]], system_tokens: int, b: int) -> list[list[int]]:
    """The id rule written turn by turn (the vectorised one must agree): shared system blocks, then
    each session's own full blocks, then a fresh id per partial last block in turn order."""
    shared = system_tokens // b
    next_id, full_ids = shared, []
    for prompts in prompts_by_session:
        own = max(prompts[-1] // b - shared, 0) if prompts else 0
        full_ids.append(list(range(shared)) + list(range(next_id, next_id + own)))
        next_id += own
    out = []
    for prompts, full in zip(prompts_by_session, full_ids):
        for p in prompts:
            ids = full[: p // b]
            if p % b:
                ids, next_id = ids + [next_id], next_id + 1
            out.append(ids)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=6), min_size=1, max_size=6),
       st.integers(0, 30), st.integers(1, 9), st.one_of(st.none(), st.integers(20, 150)))
def test_prompts_cut_and_ids_match_a_turn_by_turn_reference(sessions, system_tokens, block_tokens, limit):
    spec = SessionsConfig(count=1, turns={"kind": "fixed", "turns": 1}, system_prompt_tokens=system_tokens, hash_block_tokens=block_tokens)
    turns = np.array([len(s) for s in sessions])
    inputs = np.array([u for s in sessions for u, _ in s])
    answers = np.array([a for s in sessions for _, a in s])
    prompt, answer, ids, plan = assemble(spec, turns, inputs, answers, np.zeros(len(inputs)), None, limit)
    expected_prompts = []
    for s in sessions:
        p, kept = system_tokens, []
        for k, (u, a) in enumerate(s):
            p = p + (s[k - 1][1] if k else 0) + u
            if limit is not None and p + a > limit:
                break  # this turn and every later one of the session are not sent
            kept.append(p)
        expected_prompts.append(kept)
    assert prompt.tolist() == [p for kept in expected_prompts for p in kept]
    assert plan.turns.tolist() == [len(k) for k in expected_prompts]
    assert [i.tolist() for i in ids] == _reference_session_ids(expected_prompts, system_tokens, block_tokens)
