"""The decoding requests of one replica, advanced together by a decode clock and written lazily.

Every decode step gives each decoding request (running, prefill done) one token, so while a request
stays in the batch its progress is a function of how many decode steps the replica has taken since
it joined. `DecodeBatch` therefore keeps a decode clock (decode steps taken so far) and the end
time of every decode step, and brings a request's progress columns in the request table
(generated_tokens, kv_tokens, last_token_s, max_tbt_s) up to date only when someone needs them
(`materialize`): when it finishes, is evicted or aborted, or a policy or a check reads the batch.
Advancing k steps is then a constant amount of work instead of numpy operations over the batch.

What the engine needs at every step is kept as aggregates, updated when a request joins or leaves:

- the number of decoders and the sum of their KV tokens (the sum of kv - clock at join, plus
  size * clock, since each step adds one token to each);
- a histogram of (kv - clock) mod block_size: at clock S the requests of class (-S) mod
  block_size write the first token of a new block in the next step;
- a heap of finish clocks: a request that joined at clock S0 having generated g of its L tokens
  emits its last token at the step that brings the clock to S0 + L - g.

Exactness: `materialize` performs the same float operations step-by-step mode did per step (a gap
is the end of this step minus the end of the request's previous token, and the maximum is taken
over the gaps), so results are bit-identical to writing every step.

Deferred maxima (`defer_max_tbt=True`): the largest gap between two steps of a membership is a
range maximum over step ends, which cost a few numpy calls per finish. With deferral, `materialize`
writes everything else at once (and the gap to the membership's first token) but only notes the
range (request, first step, last step); `settle` takes the maxima of all noted ranges in a few
vectorised calls, when the step-end buffer is compacted and when `materialize_all` runs. A maximum
does not depend on the order it is taken in, so the results are the same bits; until `settle`, a
request's max_tbt_s may be too small. The engine defers only where nothing reads max_tbt_s during
the simulation (not for closed-loop clients, which judge each finished request against the SLA).

Units: tokens, blocks, seconds; clocks count decode steps. Table column `clock_base` holds, per
member, the clock at which its progress columns were last written.
"""

from __future__ import annotations

import heapq

import numpy as np


class DecodeBatch:
    """Decoding requests of one replica (see the module docstring)."""

    def __init__(self, table, block_size: int, capacity_steps: int = 4096, defer_max_tbt: bool = False) -> None:
        self.table = table
        self.defer_max_tbt = defer_max_tbt
        # ranges whose largest inner gap is not yet in max_tbt_s: request id, first and last step
        # (the gap of step s is the end of s minus the end of s - 1)
        self._pending_rids: list[int] = []
        self._pending_first: list[int] = []
        self._pending_last: list[int] = []
        self.block_size = block_size
        self.clock = 0
        # _ends[s - _offset] is the end time of decode step s (steps are numbered from 1); old
        # entries are dropped when it fills (`_make_room`)
        self._ends = np.empty(capacity_steps)
        self._offset = 1
        self.size = 0
        self._kv_minus_clock_sum = 0
        self._class_counts = [0] * block_size  # a list: read and updated one entry at a time
        self._kv_minus_clock_max: int | None = 0  # None: recompute on demand
        self._finish_heap: list[tuple[int, int, int]] = []  # (finish clock, request id, membership serial)
        self._members: dict[int, int] = {}  # request id -> membership serial
        self._serial = 0

    def __contains__(self, rid: int) -> bool:
        return rid in self._members

    def member_ids(self) -> np.ndarray:
        return np.fromiter(self._members, dtype=np.int64, count=len(self._members))

    # ------------------------------------------------------------ membership
    def join(self, rid: int) -> None:
        """Add a request whose progress columns are current (it emitted its latest token)."""
        t, clock = self.table, self.clock
        t.clock_base[rid] = clock
        c = t.kv_tokens.item(rid) - clock  # (.item: a Python int in one call)
        self._class_counts[c % self.block_size] += 1
        self._kv_minus_clock_sum += c
        if self._kv_minus_clock_max is not None and c > self._kv_minus_clock_max or self.size == 0:
            self._kv_minus_clock_max = c
        self.size += 1
        self._serial += 1
        self._members[rid] = self._serial
        finish = clock + (t.output_tokens.item(rid) - t.generated_tokens.item(rid))
        heapq.heappush(self._finish_heap, (finish, rid, self._serial))

    def remove(self, rids: list[int]) -> None:
        """Write the progress of members `rids` and take them out of the batch."""
        if len(rids) <= 8:  # a few (mostly one): scalars cost less than numpy's fancy indexing
            for rid in rids:
                self._materialize_one(rid)
        else:
            self.materialize(np.asarray(rids, dtype=np.int64))
        t, clock = self.table, self.clock
        for rid in rids:
            c = t.kv_tokens.item(rid) - clock
            self._class_counts[c % self.block_size] -= 1
            self._kv_minus_clock_sum -= c
            if c == self._kv_minus_clock_max:
                self._kv_minus_clock_max = None
            self.size -= 1
            del self._members[rid]

    # ------------------------------------------------------------ the clock
    def advance(self, ends_s) -> None:
        """Record decode steps that ended at `ends_s` (one float, or a list or array in order)."""
        one = isinstance(ends_s, float)
        k = 1 if one else len(ends_s)
        at = self.clock + 1 - self._offset
        if at + k > len(self._ends):
            self._make_room(k)
            at = self.clock + 1 - self._offset
        if one:
            self._ends[at] = ends_s  # an item, not a slice: numpy's slice assignment costs about 4x more
        else:
            self._ends[at: at + k] = ends_s
        self.clock += k

    def _make_room(self, k: int) -> None:
        """Drop step ends no member needs any more (before its clock_base + 1), grow if still short."""
        self.settle()  # the noted ranges need step ends that are about to be dropped
        keep_from = self.clock + 1
        if self._members:
            keep_from = min(keep_from, int(self.table.clock_base[self.member_ids()].min()) + 1)
        kept = self._ends[keep_from - self._offset: self.clock + 1 - self._offset].copy()
        size = len(self._ends)
        while len(kept) + k > size // 2:
            size *= 2
        self._ends = np.empty(size)
        self._ends[: len(kept)] = kept
        self._offset = keep_from

    def finished_now(self) -> list[int]:
        """Members that emitted their last token at the current clock (not yet removed)."""
        heap, out = self._finish_heap, []
        while heap and (heap[0][0] <= self.clock or self._members.get(heap[0][1]) != heap[0][2]):
            finish, rid, serial = heapq.heappop(heap)
            if self._members.get(rid) == serial:
                assert finish == self.clock, "a request ran past its output length"
                out.append(rid)
        return out

    def steps_to_next_finish(self) -> int:
        heap = self._finish_heap
        while self._members.get(heap[0][1]) != heap[0][2]:
            heapq.heappop(heap)  # a membership that ended by eviction or abort
        return heap[0][0] - self.clock

    # ------------------------------------------------------------ aggregates
    def kv_sum_tokens(self) -> int:
        return self._kv_minus_clock_sum + self.size * self.clock

    def kv_max_tokens(self) -> int:
        if self._kv_minus_clock_max is None:
            ids = self.member_ids()
            t = self.table
            # kv - clock_base is what kv - clock would be at the request's last write
            self._kv_minus_clock_max = int((t.kv_tokens[ids] - t.clock_base[ids]).max())
        return self._kv_minus_clock_max + self.clock

    def blocks_next_step(self) -> int:
        """New blocks the next decode step allocates."""
        return self._class_counts[-self.clock % self.block_size]

    def block_classes(self) -> tuple[list[int], int, int]:
        """(counts, c, block_size): decode step j (0 = the next) allocates counts[(c - j) % block_size]
        new blocks. The list is live: read it before the batch changes."""
        return self._class_counts, -self.clock % self.block_size, self.block_size

    def blocks_cumulative(self, k: int) -> np.ndarray:
        """New blocks allocated by the next j decode steps, for j = 1..k."""
        classes = (-self.clock - np.arange(k)) % self.block_size
        return np.add.accumulate(np.asarray(self._class_counts)[classes])

    def current_progress(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(generated tokens, KV tokens) of members `ids` now, without writing them."""
        t = self.table
        steps = self.clock - t.clock_base[ids]
        return t.generated_tokens[ids] + steps, t.kv_tokens[ids] + steps

    # ------------------------------------------------------------ writing progress
    def materialize(self, ids: np.ndarray) -> None:
        """Bring the progress columns of members `ids` up to the current clock."""
        t, clock = self.table, self.clock
        if len(ids) == 1:  # the common case (one request finishes): scalars are cheaper
            self._materialize_one(int(ids[0]))
            return
        base = t.clock_base[ids]
        behind = base < clock
        if not behind.all():
            ids, base = ids[behind], base[behind]
        if len(ids) == 0:
            return
        steps = clock - base
        t.kv_tokens[ids] += steps
        t.generated_tokens[ids] += steps
        ends, off = self._ends, self._offset
        first_gap = ends[base + 1 - off] - t.last_token_s[ids]
        if self.defer_max_tbt:
            t.max_tbt_s[ids] = np.maximum(t.max_tbt_s[ids], first_gap)
            inner = steps > 1
            if inner.any():
                self._pending_rids += ids[inner].tolist()
                self._pending_first += (base[inner] + 2).tolist()
                self._pending_last += [clock] * int(inner.sum())
            t.last_token_s[ids] = ends[clock - off]
            t.clock_base[ids] = clock
            return
        lo = int(base.min()) + 1  # gaps between consecutive steps lo..clock
        gaps = np.diff(ends[lo - off: clock + 1 - off])
        if len(gaps):
            # later_gap[j] = largest gap after step lo + j: a suffix maximum
            later = np.maximum.accumulate(gaps[::-1])[::-1]
            idx = base + 1 - lo
            has_later = idx < len(later)
            later_gap = np.where(has_later, later[np.minimum(idx, len(later) - 1)], 0.0)
            worst = np.maximum(first_gap, later_gap)
        else:
            worst = first_gap
        t.max_tbt_s[ids] = np.maximum(t.max_tbt_s[ids], worst)
        t.last_token_s[ids] = ends[clock - off]
        t.clock_base[ids] = clock

    def _materialize_one(self, rid: int) -> None:
        t, clock = self.table, self.clock
        base = t.clock_base.item(rid)
        if base == clock:
            return
        steps = clock - base
        t.kv_tokens[rid] += steps
        t.generated_tokens[rid] += steps
        if self.defer_max_tbt:
            ends, off = self._ends, self._offset
            first_gap = ends[base + 1 - off] - t.last_token_s[rid]
            if first_gap > t.max_tbt_s[rid]:
                t.max_tbt_s[rid] = first_gap
            if steps > 1:
                self._pending_rids.append(rid)
                self._pending_first.append(base + 2)
                self._pending_last.append(clock)
            t.last_token_s[rid] = ends[clock - off]
            t.clock_base[rid] = clock
            return
        ends = self._ends[base + 1 - self._offset: clock + 1 - self._offset]
        worst = ends[0] - t.last_token_s[rid]
        if steps > 1:
            worst = max(worst, np.subtract(ends[1:], ends[:-1]).max())
        t.max_tbt_s[rid] = max(t.max_tbt_s[rid], worst)
        t.last_token_s[rid] = ends[-1]
        t.clock_base[rid] = clock

    def materialize_all(self) -> None:
        """Bring every member's columns up to the current clock and settle every deferred maximum."""
        if self._members:
            self.materialize(self.member_ids())
        self.settle()

    def settle(self) -> None:
        """Fold the largest gap of every noted range into max_tbt_s (deferred maxima, see the
        module docstring): one range maximum per range over the gaps between step ends."""
        if not self._pending_rids:
            return
        rids = np.asarray(self._pending_rids, dtype=np.int64)
        first = np.asarray(self._pending_first, dtype=np.int64)
        last = np.asarray(self._pending_last, dtype=np.int64)
        self._pending_rids, self._pending_first, self._pending_last = [], [], []
        lo = int(first.min())
        # gaps[i] is the gap of step lo + i; the 0 after them keeps reduceat's indices in range
        ends = self._ends[lo - 1 - self._offset: int(last.max()) + 1 - self._offset]
        gaps = np.append(np.subtract(ends[1:], ends[:-1]), 0.0)
        bounds = np.empty(2 * len(rids), dtype=np.int64)
        bounds[0::2] = first - lo
        bounds[1::2] = last - lo + 1
        # reduceat gives the maximum of gaps[bounds[2i]:bounds[2i + 1]] at 2i (and, at 2i + 1,
        # values between ranges, which are not used)
        worst = np.maximum.reduceat(gaps, bounds)[0::2]
        np.maximum.at(self.table.max_tbt_s, rids, worst)  # a request may have several ranges

    def check(self) -> None:
        """Assert the aggregates agree with the members (tests)."""
        self.materialize_all()
        t, ids = self.table, self.member_ids()
        assert self.size == len(ids)
        kv = t.kv_tokens[ids]
        assert self.kv_sum_tokens() == int(kv.sum())
        counts = np.bincount((kv - self.clock) % self.block_size, minlength=self.block_size)
        assert counts.tolist() == self._class_counts, (counts, self._class_counts)
        if len(ids):
            assert self.kv_max_tokens() == int(kv.max())
