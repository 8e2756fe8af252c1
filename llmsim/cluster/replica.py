"""One replica as a SimPy process: plan a step, wait for its end, apply it; idle until woken.

The engine (llmsim.cluster.engine) is plain Python and knows nothing of SimPy; this process is its
only driver in a simulation. It keeps the replica's own clock: a step planned at `now_s` ends at
the time the plan says (a single step: now_s + its duration; a fast-forwarded run: its last
step's end, summed step by step), and that exact time is what the engine is told. SimPy's clock
reads the same time then (`events.delay_to`), except where no delay lands on it (a run that more
than doubles the clock, early in a simulation): it then reads the next representable time, which
orders the step end after anything at its exact time (as a URGENT arrival is anyway) and changes
no result, since the times written to requests come from the replicas' clocks and the requests'
arrival times, never from SimPy's. Event order: llmsim.cluster.events.

Units: seconds of simulated time.
"""

from __future__ import annotations

from typing import Callable

import simpy

from .engine import ReplicaEngine
from .events import delay_to, move_wait


class ReplicaProcess:
    """Drives one ReplicaEngine. `on_end(ids)` is called with the requests that ended (finished,
    dropped or aborted) after each plan and each apply."""

    def __init__(self, env: simpy.Environment, engine: ReplicaEngine, on_end: Callable[[list[int]], None] | None = None) -> None:
        self.env = env
        self.engine = engine
        self.on_end = on_end
        self._idle: simpy.Event | None = None  # while the replica has nothing to run
        self._run_end: simpy.Event | None = None  # while waiting for a fast-forwarded run's end
        self.process = env.process(self._loop())

    def enqueue(self, rid: int, seen_s: float) -> None:
        """A request reaches this replica; `seen_s` is when it is ordered against step ends (now
        for an open-loop arrival, just after now for a closed-loop send: events.py)."""
        new_head = self.engine.enqueue(rid, seen_s)
        if self._idle is not None:
            if not self._idle.triggered:
                # it plans at the request's arrival time (SimPy's clock can be an ulp past it)
                self._idle.succeed(float(self.engine.table.arrival_s[rid]))
        elif new_head and self._run_end is not None and self.engine.cut_run(seen_s):
            # the run's end moved earlier: the process now waits for an event at the new end
            self._run_end = move_wait(self.env, self._run_end, delay_to(self.env, self.engine.active_run.end_s))

    def _loop(self):
        env, engine = self.env, self.engine
        # bound once, when the process starts: this loop runs once per step or run
        plan_step, finish_step, timeout = engine.plan_step, engine.finish_step, env.timeout
        now_s = env.now
        while True:
            step = plan_step(now_s)
            if engine.ended:
                self._report()
            if step is None:
                self._idle = env.event()
                now_s = yield self._idle  # the arrival time of the request that woke it
                self._idle = None
                continue
            run = step.run
            clock_s = env.now
            if run is None:
                end_s = now_s + step.duration_s
                # SimPy adds the duration to its clock the same way (delay_to where the clock is off)
                delay = step.duration_s if clock_s == now_s else delay_to(env, end_s)
                yield timeout(delay)
            else:
                end_s = run.end_s
                delay = end_s - clock_s  # delay_to's first try, inlined (once a cycle): it mostly lands
                if delay <= 0.0 or clock_s + delay != end_s:
                    delay = delay_to(env, end_s)
                self._run_end = timeout(delay)
                yield self._run_end
                self._run_end = None
                end_s = run.end_s  # earlier than planned if an arrival cut the run
            finish_step(step, end_s)
            if engine.ended:
                self._report()
            now_s = end_s

    def _report(self) -> None:
        ended = self.engine.take_ended()
        if ended and self.on_end is not None:
            self.on_end(ended)
