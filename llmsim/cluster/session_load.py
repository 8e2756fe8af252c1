"""Multi-turn sessions as one SimPy process: turn k+1 is sent its think time after turn k ends.

The turns (lengths, caps, block hash ids) are drawn before the run (llmsim.workload.sessions);
only send times depend on the simulation. A session starts at its drawn start time (poisson,
gamma or all-at-once starts: sent as open-loop arrivals, llmsim.cluster.events, order 1), or, in
closed loop, when one of `clients` session slots is free: `clients` sessions run at once, and a
slot starts the next session `gap_s` (workload.arrivals.think_time_s) after its session ends.

When turn k ends:
- finished: turn k+1 is sent at end_k + think_{k+1} (its prompt holds turn k's whole answer, which
  now exists); after the last turn the session is complete;
- dropped or aborted by the SLA guard: the session ends there. The user got no answer, and the
  next prompt would have to contain one; a turn is never sent with an answer that does not exist.
  Such sessions are counted (`failed`).
A session whose next turn would be longer than a replica can run ends after its last turn that
fits (`cut_by_max_model_len`; one whose first turn does not fit sends nothing: `first_turn_too_long`).
The run stops sending at `stop_sending_s` (workload.duration_s) or after `max_turns` turns
(workload.num_requests: the requests are the turns): a turn due then is not sent and ends its
session (`cut_by_run_end`); sessions never started are counted (`not_started`).

A follow-up turn is a closed-loop send (events.py, order 3): every send due at one time goes out
from one event created at that time, in session order. Only sessions between two turns hold an
event (their think timeout), and sessions not yet started cost nothing: a pool of 10^8 session
slots costs what its busy sessions cost. The request table's `client` column holds the session.

Units: seconds of simulated time.
"""

from __future__ import annotations

import math
from typing import Callable

import simpy

from ..request import FINISHED, RequestTable
from ..workload import Workload
from .events import ARRIVAL_PRIORITY, DueSends, PriorityTimeout, delay_to

NEW_SESSION = -1  # a due send that starts the next unstarted session (closed loop)


class SessionPool:
    """Sends the turns of a workload's sessions (see the module docstring)."""

    def __init__(self, env: simpy.Environment, table: RequestTable, wl: Workload, dispatch: Callable[[int, float], None],
                 clients: int | None, gap_s: float = 0.0, stop_sending_s: float | None = None,
                 max_turns: int | None = None) -> None:
        self.env, self.table, self.wl, self.plan = env, table, wl, wl.sessions
        self.dispatch = dispatch
        self.gap_s = gap_s
        self.stop_sending_s = math.inf if stop_sending_s is None else stop_sending_s
        self.turns_left = math.inf if max_turns is None else max_turns
        # started = completed + failed + cut_by_max_model_len + cut_by_run_end once the run is over
        self.counts = {"started": 0, "completed": 0, "failed": 0, "cut_by_max_model_len": 0, "cut_by_run_end": 0,
                       "first_turn_too_long": 0}
        self._next_session = 0  # closed loop: the next session a free slot starts
        # sends due: (time, session or ended session, turn or NEW_SESSION), in session order
        self._sends = DueSends(env, self._release, key=lambda send: send[1])
        self.in_flight = self.max_in_flight = 0
        sessions = len(self.plan.turns)
        if self.plan.start_s is None:
            for s in range(min(clients, sessions)):
                self._sends.due.append((0.0, s, NEW_SESSION))
        else:
            env.process(self._starts())
        self.process = self._sends.process

    def summary(self) -> dict:
        """Session counts for the run's summary."""
        sessions = len(self.plan.turns)
        c = self.counts
        return {"sessions": sessions, **c, "not_started": sessions - c["started"] - c["first_turn_too_long"]}

    def notify_done(self, ids) -> None:
        """Turns ended on a replica: schedule each session's next turn, or end the session."""
        t, plan = self.table, self.plan
        for rid in ids:
            self.in_flight -= 1
            end_s, turn = float(t.end_s[rid]), int(t.origin_id[rid])
            s = int(plan.session_of_turn[turn])
            if t.status[rid] == FINISHED and turn + 1 < plan.first_turn[s] + plan.turns[s]:
                self._schedule(end_s + float(plan.think_s[turn + 1]), s, turn + 1)
                continue
            if t.status[rid] != FINISHED:
                self.counts["failed"] += 1
            elif plan.turns[s] < plan.drawn_turns[s]:
                self.counts["cut_by_max_model_len"] += 1  # its next turn would not fit (workload note)
            else:
                self.counts["completed"] += 1
            self._session_over(end_s, s)

    def _session_over(self, end_s: float, s: int) -> None:
        if self.plan.start_s is None:  # closed loop: the slot starts the next session
            self._schedule(end_s + self.gap_s, s, NEW_SESSION)

    def _schedule(self, at_s: float, key: int, turn: int) -> None:
        if at_s > self.env.now:
            self._sends.at(at_s, (at_s, key, turn))
        else:
            self._sends.now((at_s, key, turn))

    def _release(self, send: tuple[float, int, int]) -> None:
        at_s, key, turn = send
        if turn == NEW_SESSION:
            self._start_next(at_s)
        else:
            self._send(at_s, key, turn, math.nextafter(at_s, math.inf))

    def _start_next(self, at_s: float) -> None:
        """Closed loop: start the next session that has a turn to send."""
        plan = self.plan
        while self._next_session < len(plan.turns) and at_s < self.stop_sending_s and self.turns_left > 0:
            s, self._next_session = self._next_session, self._next_session + 1
            if plan.turns[s] > 0:
                self._send(at_s, s, int(plan.first_turn[s]), math.nextafter(at_s, math.inf))
                return
            self.counts["first_turn_too_long"] += 1  # it sends nothing (a workload note)

    def _starts(self):
        """Open loop: each session's first turn at its start time, as an open-loop arrival."""
        plan = self.plan
        for s, start in enumerate(plan.start_s.tolist()):
            if start >= self.stop_sending_s or self.turns_left <= 0:
                return  # starts are in time order: no later session starts either
            if plan.turns[s] == 0:
                self.counts["first_turn_too_long"] += 1
                continue
            if start > self.env.now:
                yield PriorityTimeout(self.env, delay_to(self.env, start), ARRIVAL_PRIORITY)
            self._send(start, s, int(plan.first_turn[s]), start)

    def _send(self, at_s: float, s: int, turn: int, seen_s: float) -> None:
        if at_s >= self.stop_sending_s or self.turns_left <= 0:
            if turn != self.plan.first_turn[s]:
                self.counts["cut_by_run_end"] += 1
            return
        self.turns_left -= 1
        if turn == self.plan.first_turn[s]:
            self.counts["started"] += 1
        wl = self.wl
        rid = self.table.append(at_s, wl.prompt_tokens[turn], wl.output_tokens[turn], wl.max_new_tokens[turn], client=s, origin_id=turn)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.dispatch(rid, seen_s)
