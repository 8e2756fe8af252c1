"""EngineView (llmsim.cluster.view): the view a policy's round gets builds the running batch, its
columns and the KV held only when read; each must equal what the request table holds at the
view's boundary once the decode batch's lazy progress is written (`ReplicaEngine.sync`)."""

from __future__ import annotations

import collections

import numpy as np
from helpers import drive, make_engine, make_table


def _read(view):
    """Every lazy field, read now (before anything is written)."""
    running = view.running
    return (running.request_ids.copy(), running.prompt_tokens.copy(), running.max_new_tokens.copy(),
            running.generated_tokens.copy(), running.kv_tokens.copy(), view.columns, view.kv_held)


def _check_views(engine, now_s, seen):
    t = engine.table
    all_decoding = engine.batch.size == len(engine.running)
    ahead = 3 if all_decoding else 0  # fast-forward asks for views ahead only while all decode
    views = [(0, engine._view(now_s)), (ahead, engine._view(now_s, ahead, 7))]
    read = [(a, v, _read(v)) for a, v in views]
    if read[0][2][5] is not None:  # columns: gathered from the table's rows, read them before sync writes
        cols = read[0][2][5]
        gathered = [cols.generated[cols.ids] + cols.clock - cols.clock_base[cols.ids], cols.kv[cols.ids] + cols.clock - cols.clock_base[cols.ids]]
    engine.sync()
    ids = np.array(engine.running, dtype=np.int64)
    generated, kv = t.generated_tokens[ids], t.kv_tokens[ids]
    assert views[1][1].free_blocks == 7 and views[0][1].free_blocks == engine.kv.free_blocks
    for a, view, (rids, prompts, caps, gen, held, columns, kv_held) in read:
        assert rids.tolist() == ids.tolist()
        assert prompts.tolist() == t.prompt_tokens[ids].tolist() and caps.tolist() == t.max_new_tokens[ids].tolist()
        assert gen.tolist() == (generated + a).tolist() and held.tolist() == (kv + a).tolist()
        if all_decoding:
            assert kv_held == (len(ids), int(kv.sum()) + len(ids) * a)
            assert columns is not None and columns.clock == engine.batch.clock + a
        else:
            assert columns is None and kv_held is None
    if read[0][2][5] is not None:
        assert gathered[0].tolist() == generated.tolist() and gathered[1].tolist() == kv.tolist()
    seen["all decoding" if all_decoding else "some prefilling"] += 1


def test_a_policys_view_reads_what_the_table_holds_at_its_boundary():
    rng = np.random.default_rng(3)
    n = 14
    t = make_table(rng.integers(4, 40, n).tolist(), rng.integers(1, 30, n).tolist(),
                   arrivals=np.sort(rng.uniform(0.0, 0.3, n)).tolist())
    # mixed mode with a small token budget: prompts are prefilled in chunks beside decoding requests
    e = make_engine(t, "past-future", total_blocks=200, mode="mixed", max_batched_tokens=16)
    seen = collections.Counter()
    plan_step = e.plan_step

    def plan(now_s):
        if e.running:
            _check_views(e, now_s, seen)
        return plan_step(now_s)

    e.plan_step = plan
    drive(e)
    assert seen["all decoding"] > 5 and seen["some prefilling"] > 5, seen
