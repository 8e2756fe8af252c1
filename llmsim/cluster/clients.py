"""Closed-loop load: N clients, each sending its next request when its previous one ends.

This is how the Past-Future paper's benchmark drove its servers. The request stream (lengths and
caps, in order) is materialised before the run like every workload; only the send times depend on
the simulation. A client takes the next unsent request of the stream, waits for it to finish (or
to be dropped or aborted by the server's SLA guard), optionally re-sends it while it misses the
SLA (each attempt is a new row of the request table, with `origin_id` and `attempt`), optionally
thinks, and repeats. Sending stops after `num_requests` requests or at `duration_s`, whichever the
workload sets; requests in flight then finish.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from ..request import FINISHED, RequestTable


class ClosedLoopClients:
    def __init__(
        self,
        env: simpy.Environment,
        table: RequestTable,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        max_new_tokens: np.ndarray,
        dispatch: Callable[[int], None],
        is_good: Callable[[int], bool],
        clients: int,
        think_time_s: float = 0.0,
        resend_failed: bool = False,
        max_attempts: int = 1,
        stop_sending_s: float | None = None,
    ) -> None:
        self.env = env
        self.table = table
        self.stream = (prompt_tokens, output_tokens, max_new_tokens)
        self.dispatch = dispatch
        self.is_good = is_good
        self.think_time_s = think_time_s
        self.max_attempts = max_attempts if resend_failed else 1
        self.stop_sending_s = stop_sending_s
        self._next = 0
        self._waiting: dict[int, simpy.Event] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        for c in range(clients):
            env.process(self._client(c))

    def notify_done(self, ids) -> None:
        """Called by the replicas when requests finish, are dropped or aborted."""
        for rid in ids:
            ev = self._waiting.pop(int(rid), None)
            if ev is not None:
                ev.succeed()

    def _take(self) -> int | None:
        if self._next >= len(self.stream[0]):
            return None
        if self.stop_sending_s is not None and self.env.now >= self.stop_sending_s:
            return None
        job = self._next
        self._next += 1
        return job

    def _client(self, client: int):
        prompt, output, cap = self.stream
        while (job := self._take()) is not None:
            for attempt in range(self.max_attempts):
                rid = self.table.append(self.env.now, prompt[job], output[job], cap[job], client=client, origin_id=job, attempt=attempt)
                done = self._waiting[rid] = self.env.event()
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                self.dispatch(rid)
                yield done
                self.in_flight -= 1
                if self.table.status[rid] == FINISHED and self.is_good(rid):
                    break
                if self.stop_sending_s is not None and self.env.now >= self.stop_sending_s:
                    break
            if self.think_time_s > 0:
                yield self.env.timeout(self.think_time_s)
