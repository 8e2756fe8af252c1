"""DecodeBatch (lazy progress of decoding requests) against a reference that writes every step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.cluster.decode_batch import DecodeBatch
from llmsim.request import RequestTable


def _table(n: int) -> RequestTable:
    return RequestTable(np.zeros(n), np.full(n, 10), np.full(n, 10**6), np.full(n, 10**6))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["join", "advance", "remove", "sync", "settle"]), st.integers(1, 40)), min_size=1, max_size=120),
       st.sampled_from([1, 4, 16]), st.integers(0, 2**31), st.booleans())
def test_lazy_progress_equals_writing_every_step(ops, block_size, seed, defer):
    rng = np.random.default_rng(seed)
    t = _table(200)
    # tiny buffer: exercises the compaction (which settles deferred maxima)
    batch = DecodeBatch(t, block_size, capacity_steps=8, defer_max_tbt=defer)
    ref = {}  # rid -> [generated, kv, last_token_s, max_tbt_s], written every step
    gone = {}  # removed requests: rid -> what they had when they left (their max_tbt_s may be deferred)
    now, next_rid = 0.0, 0
    for op, arg in ops:
        if op == "join" and next_rid < 200:
            rid, next_rid = next_rid, next_rid + 1
            gen, kv = int(rng.integers(1, 50)), int(rng.integers(1, 500))
            t.generated_tokens[rid], t.kv_tokens[rid], t.last_token_s[rid], t.max_tbt_s[rid] = gen, kv, now, 0.0
            ref[rid] = [gen, kv, now, 0.0]
            batch.join(rid)
        elif op == "advance":
            # A maximum hides errors: make the largest gap land first, last or anywhere (a spike).
            gaps = np.sort(rng.uniform(0.001, 0.1, size=arg))
            shape = rng.integers(3)
            if shape == 0:
                gaps = gaps[::-1]
            elif shape == 2:
                gaps[rng.integers(arg)] = rng.uniform(0.5, 1.0)
            ends = now + np.cumsum(gaps)
            batch.advance(ends if arg > 1 else float(ends[0]))
            for e in ends.tolist():
                for r in ref.values():
                    r[0] += 1
                    r[1] += 1
                    r[3] = max(r[3], e - r[2])
                    r[2] = e
            now = float(ends[-1])
        elif op == "remove" and ref:
            rid = sorted(ref)[arg % len(ref)]
            batch.remove([rid])
            gone[rid] = r = ref.pop(rid)
            assert [int(t.generated_tokens[rid]), int(t.kv_tokens[rid]), float(t.last_token_s[rid])] == r[:3]
            if defer:
                assert float(t.max_tbt_s[rid]) <= r[3]  # the largest gap may wait for settle()
            else:
                assert float(t.max_tbt_s[rid]) == r[3]
        elif op == "settle":
            batch.settle()
            assert {rid: float(t.max_tbt_s[rid]) for rid in gone} == {rid: r[3] for rid, r in gone.items()}
        elif op == "sync":
            batch.materialize_all()
            for rid, r in ref.items():
                assert [int(t.generated_tokens[rid]), int(t.kv_tokens[rid]), float(t.last_token_s[rid]), float(t.max_tbt_s[rid])] == r
            assert {rid: float(t.max_tbt_s[rid]) for rid in gone} == {rid: r[3] for rid, r in gone.items()}
        assert batch.size == len(ref)
        if ref:
            assert batch.kv_sum_tokens() == sum(r[1] for r in ref.values())
            assert batch.kv_max_tokens() == max(r[1] for r in ref.values())
            assert batch.blocks_next_step() == sum(1 for r in ref.values() if r[1] % block_size == 0)
    batch.check()  # materializes and settles everything
    assert {rid: float(t.max_tbt_s[rid]) for rid in gone} == {rid: r[3] for rid, r in gone.items()}


def test_finish_clocks_come_out_at_the_step_of_the_last_token():
    t = _table(3)
    t.output_tokens[:3] = [5, 3, 9]
    t.generated_tokens[:3] = 1
    t.kv_tokens[:3] = 10
    batch = DecodeBatch(t, 16)
    for rid in range(3):
        batch.join(rid)
    assert batch.steps_to_next_finish() == 2  # request 1 has 2 tokens left
    batch.advance(np.array([0.1, 0.2]))
    assert batch.finished_now() == [1]
    batch.remove([1])
    assert batch.steps_to_next_finish() == 2
    batch.advance(np.array([0.3, 0.4]))
    assert batch.finished_now() == [0]
    batch.remove([0])
    assert int(t.generated_tokens[0]) == 5 and float(t.last_token_s[0]) == 0.4


def _progress(t, rid):
    return int(t.generated_tokens[rid]), float(t.last_token_s[rid]), float(t.max_tbt_s[rid])


@pytest.mark.parametrize("defer", [False, True])
def test_the_largest_gap_is_found_wherever_it_falls_and_after_the_buffer_is_compacted(defer):
    t = _table(4)
    t.generated_tokens[:4] = 1
    t.kv_tokens[:4] = 10
    t.last_token_s[:4] = 0.0
    batch = DecodeBatch(t, 16, capacity_steps=4, defer_max_tbt=defer)
    batch.join(0)
    batch.advance(np.array([0.9, 1.0, 1.1]))  # request 0's first gap (0.9) is its largest
    t.last_token_s[1:4] = 1.1
    for rid in (1, 2, 3):
        batch.join(rid)
    batch.advance(np.array([1.2, 1.7, 1.8, 1.9]))  # for 1, 2, 3 the largest gap (0.5) is the second
    batch.materialize(np.array([1, 2]))  # several requests at once
    batch.materialize(np.array([3]))  # one request (a separate, scalar path)
    batch.settle()
    assert _progress(t, 1) == _progress(t, 2) == _progress(t, 3) == (5, 1.9, 1.7 - 1.2)
    for j in range(40):  # many small steps: the step-end buffer is compacted several times while
        batch.advance(2.0 + 0.01 * j)  # request 0 still needs the end of step 1
    batch.remove([0])
    batch.settle()
    assert _progress(t, 0) == (1 + 3 + 4 + 40, 2.0 + 0.01 * 39, 0.9)
    batch.materialize_all()
    assert _progress(t, 1) == (45, 2.0 + 0.01 * 39, 1.7 - 1.2)
