"""The future-peak function shared by past-future, oracle and reserve-peak (docs/schedulers.md §2).

Each request is a pair (a, b): a = KV tokens it holds now, b = KV tokens it will still add before
it finishes. Sort by b, largest first, and let A_k be the sum of the first k values of a. Then

    peak = max over k of (A_k + k * b_k)

because b_k steps from now every request after k in that order has finished and freed its memory,
while each of the first k has grown by b_k tokens. Occupancy only rises between finishes, so these
n points are the only candidates for the maximum.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _compiled


def remaining_growth_tokens(prompt_tokens, final_output_tokens, held_tokens):
    """b for a request expected to end with `final_output_tokens`: it will then hold
    prompt + output - 1 tokens (llmsim's KV convention, see llmsim.request), so it still adds
    that minus what it holds now. Never negative. Works on scalars and arrays."""
    return np.maximum(0, prompt_tokens + final_output_tokens - 1 - held_tokens)


def copy_round(rnd, memo):
    """`__deepcopy__` of a future-peak policy's round (past-future, oracle): its peak lists copied,
    every other attribute shared (the scheduler, the oracle's true lengths, a prefix-chain
    function: no round writes them). The engine copies a held round before offering it a second
    candidate (decide.py); the generic walk also copied the oracle's array of every request's true
    length each time."""
    twin = copy.copy(rnd)
    twin.peaks = copy.deepcopy(rnd.peaks, memo)
    return twin


class PeakAdmissionRound:
    """An admission round that admits a candidate while the future peak stays within `limit_tokens`.

    Holds one or more lists of (a, b) pairs for the running batch (one list for exact growths, several
    sampled lists for past-future). A candidate brings one growth per list; it is admitted if the
    largest peak over the lists, with it added, is at most `limit_tokens`, and then stays in the lists
    for the rest of the round.

    A candidate is checked and added in one compiled call (_compiled.try_add), and the lists are
    sorted by growth only once a candidate needs the exact peak (most pass a cheaper bound, see
    _peak_kernels.py): the definition above, computed incrementally.
    """

    def __init__(self, held_tokens: np.ndarray, growth_tokens: np.ndarray, limit_tokens: float) -> None:
        held = np.asarray(held_tokens, dtype=np.float64)
        growth = np.asarray(growth_tokens, dtype=np.float64)
        growth = growth if growth.ndim == 2 else growth[None, :]  # (lists, n)
        self.limit_tokens = limit_tokens
        # a few free columns: most rounds admit one or two requests
        self._pairs = _compiled.lay_out(held, growth, 4)
        self._count = len(held)
        self._sorted = False

    @classmethod
    def resumed(cls, pairs: np.ndarray, count: int, is_sorted: bool, limit_tokens: float) -> "PeakAdmissionRound":
        """A compiled round carried on from a kernel that built and extended its lists
        (`_compiled.*_rounds_ahead`): `pairs` as `_compiled.lay_out` lays them out, `count` used."""
        self = cls.__new__(cls)
        self.limit_tokens, self._pairs, self._count, self._sorted = limit_tokens, pairs, count, is_sorted
        return self

    def __deepcopy__(self, memo) -> "PeakAdmissionRound":
        """What copy.deepcopy gives (the lists are the only mutable part), without its generic
        walk: the engine copies a held round before offering it a second candidate (decide.py)."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._pairs = self._pairs.copy()
        return twin

    @property
    def num_lists(self) -> int:
        return self._pairs.shape[1]

    def lists(self) -> list[list[tuple[float, float]]]:
        """The (held, growth) pairs of each list, largest growth first (ties: smaller held first);
        for tests and inspection."""
        held, growth = self._pairs[0, :, :self._count], self._pairs[1, :, :self._count]
        return [sorted(zip(h.tolist(), g.tolist()), key=lambda p: (-p[1], p[0])) for h, g in zip(held, growth)]

    def try_add(self, held: float, growth_per_list: np.ndarray) -> bool:
        """Admit a candidate holding `held` tokens that grows by `growth_per_list` (one value per
        list, or one shared by all) if the largest peak with it fits; it then stays in the lists."""
        return self.try_add_by(_compiled.try_add, float(held), np.asarray(growth_per_list, dtype=np.float64).reshape(-1))

    def try_add_by(self, kernel, *args) -> bool:
        """`kernel(pairs, count, is_sorted, *args, limit_tokens)` adds a
        request, or not, as `_compiled.try_add` does and with its returns (a policy's kernel that
        makes the candidate's growths and then calls it, in one call)."""
        if self._count == self._pairs.shape[2]:  # full: double the columns
            self._pairs = np.concatenate((self._pairs, np.empty_like(self._pairs)), axis=2)
        outcome = kernel(self._pairs, self._count, self._sorted, *args, self.limit_tokens)
        self._sorted = outcome <= 1  # 0: refused, 1: added, lists sorted; 2: added, 3: refused, maybe not
        if outcome in (0, 3):
            return False
        self._count += 1
        return True


def first_admitting_exact_round(view, steps_ahead: np.ndarray, final_tokens: np.ndarray | None, candidate, candidate_final_tokens: int,
                                slack_tokens: int, headroom: float) -> tuple[int, PeakAdmissionRound | None] | None:
    """For oracle and reserve-peak (one list, known final lengths of the running requests and of
    the candidate): the rounds due `steps_ahead[i]` decode steps after `view`, each offered
    `candidate` first, in one compiled call. `final_tokens` is a column of final lengths by
    request id (None: the caps). Returns (index of the first that admits it, its
    peaks with the candidate in them) or (len(steps_ahead), None)."""
    cols = view.batch_columns()
    limit = view.capacity_tokens * (1.0 - headroom)
    cand_growth = float(max(0, candidate.prompt_tokens + candidate_final_tokens - 1 - candidate.kv_tokens))  # remaining_growth_tokens
    final = cols.max_new if final_tokens is None else cols.rows_of(final_tokens)
    index, pairs, is_sorted = _compiled.exact_rounds_ahead(cols.ids, final, cols.prompt, cols.kv, cols.clock_base, cols.clock,
                                                           slack_tokens, limit, steps_ahead, cand_growth,
                                                           float(candidate.kv_tokens + slack_tokens))
    return index, (None if index == len(steps_ahead) else PeakAdmissionRound.resumed(pairs, len(cols.ids) + 1, is_sorted, limit))
