"""Load generators as SimPy processes: open-loop arrivals, and a pool of closed-loop clients.

Both hand each request to `dispatch(rid, seen_s)`, which routes and enqueues it; `seen_s` is the
time it is ordered against step ends (llmsim.cluster.events).

Open loop: the request table is filled before the run; one process wakes at each distinct arrival
time (URGENT) and dispatches every request arriving then.

Closed loop: N clients, each sending its next request when its previous one ends (how the
Past-Future paper's benchmark drove its servers). The request stream (lengths and caps, in order)
is materialised before the run like every workload; only the send times depend on the simulation.
A client takes the next unsent request of the stream, waits for it to end (finish, or be dropped
or aborted by the server's SLA guard), optionally re-sends it while it misses the SLA (each attempt
is a new row of the request table, with `origin_id` and `attempt`), optionally thinks, and
repeats. Sending stops after the stream or at `stop_sending_s`; requests in flight then finish.
A failed attempt is re-sent at once by its client (`same-client`), or goes to the tail of the
queue every client takes from, after the requests never sent (`shared-queue`: the Past-Future
artifact's clients, which retried until every request succeeded once). A client that finds the
queue empty stops. With no attempt cap a request that fails 10,000 times is an error (it cannot
meet the SLA); requests a cap abandons are counted (`abandoned`).

The clients are one process, not one each: a client's state is a few numbers, and only clients
with a send due hold an event (think timeouts), so a pool of 10^8 clients costs what its busy
clients cost. Sends due at one time go out together from one event created at that time, in
client order, so the order in which replicas ended the previous requests does not matter.

Units: seconds of simulated time.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

import numpy as np
import simpy

from ..errors import LlmsimError
from ..request import FINISHED, RequestTable
from .events import ARRIVAL_PRIORITY, DueSends, PriorityTimeout, delay_to


UNBOUNDED_ATTEMPTS_LIMIT = 10_000  # with no cap, a request failing this often can never succeed


def open_loop_arrivals(env: simpy.Environment, arrival_s: np.ndarray, dispatch: Callable[[int, float], None]):
    """Process: dispatch request i at its arrival time arrival_s[i] (ids are arrival order)."""
    times = arrival_s.tolist()
    n, i = len(times), 0
    while i < n:
        now = times[i]
        if now > env.now:
            yield PriorityTimeout(env, delay_to(env, now), ARRIVAL_PRIORITY)
        while i < n and times[i] <= now:
            dispatch(i, now)
            i += 1


class ClientPool:
    """Closed-loop clients as one process (see the module docstring)."""

    def __init__(self, env: simpy.Environment, table: RequestTable, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                 max_new_tokens: np.ndarray, dispatch: Callable[[int, float], None], is_good: Callable[[int], bool],
                 clients: int, think_time_s: float = 0.0, resend_failed: bool = False, max_attempts: int | None = 1,
                 stop_sending_s: float | None = None, shared_queue: bool = False) -> None:
        self.env = env
        self.table = table
        self.stream = (prompt_tokens, output_tokens, max_new_tokens)
        self.dispatch = dispatch
        self.is_good = is_good
        self.think_time_s = think_time_s
        self.max_attempts = (math.inf if max_attempts is None else max_attempts) if resend_failed else 1
        self.shared_queue = shared_queue
        self._retries: deque[tuple[int, int]] = deque()  # shared queue: (request, attempt), after the unsent ones
        self._due_retries: list[tuple[int, int, int]] = []  # (client, request, attempt) to queue at the next wake
        self.abandoned = 0  # requests whose last allowed attempt failed
        self.stop_sending_s = math.inf if stop_sending_s is None else stop_sending_s
        self._next_job = 0
        # sends due: (time, client, job, attempt); a job of None takes the next unsent request
        self._sends = DueSends(env, lambda send: self._send(*send), key=lambda send: send[1], before=self._queue_retries)
        self.process = self._sends.process
        self.in_flight = 0
        self.max_in_flight = 0
        # clients beyond the stream never send: only as many as can be busy are started
        for c in range(min(clients, len(prompt_tokens))):
            self._sends.due.append((0.0, c, None, 0))

    def notify_done(self, ids) -> None:
        """Requests ended on a replica (finished, dropped or aborted): their clients decide what to
        send next (the same request again at once, or the next one after thinking). Times come
        from the request's end, not SimPy's clock (events.delay_to)."""
        t = self.table
        for rid in ids:
            self.in_flight -= 1
            end_s = float(t.end_s[rid])
            client, job, attempt = int(t.client[rid]), int(t.origin_id[rid]), int(t.attempt[rid])
            failed = not (t.status[rid] == FINISHED and self.is_good(rid))
            if failed and attempt + 1 < self.max_attempts:
                if attempt + 1 >= UNBOUNDED_ATTEMPTS_LIMIT:
                    raise LlmsimError(f"request {job} failed {attempt + 1:,} attempts: it cannot meet the SLA on this "
                                      "replica; loosen the SLA, or set workload.arrivals.max_attempts")
                if not self.shared_queue:
                    self._sends.now((end_s, client, job, attempt + 1))  # a failed attempt: again at once
                    continue
                self._due_retries.append((client, job, attempt + 1))  # to the queue's tail (`_queue_retries`)
            elif failed:
                self.abandoned += 1
            if self.think_time_s > 0:
                self._sends.at(end_s + self.think_time_s, (end_s + self.think_time_s, client, None, 0))
            else:
                self._sends.now((end_s, client, None, 0))

    def _queue_retries(self) -> None:
        """At each wake: failed attempts to the shared queue's tail, in client order, whichever
        replica ended them first."""
        if self._due_retries:
            for _client, job, attempt in sorted(self._due_retries):
                self._retries.append((job, attempt))
            self._due_retries = []

    def _send(self, at_s: float, client: int, job: int | None, attempt: int) -> None:
        if at_s >= self.stop_sending_s:
            return
        if job is None:
            if self._next_job < len(self.stream[0]):
                job, self._next_job = self._next_job, self._next_job + 1
            elif self._retries:
                job, attempt = self._retries.popleft()
            else:
                return
        prompt, output, cap = self.stream
        rid = self.table.append(at_s, prompt[job], output[job], cap[job], client=client, origin_id=job, attempt=attempt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.dispatch(rid, math.nextafter(at_s, math.inf))
