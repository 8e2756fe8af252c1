"""The one event order of a simulation, and the two SimPy helpers every process uses.

There is one SimPy event loop (`simpy.Environment.run`). Its processes are one per replica
(llmsim.cluster.replica), and either one for open-loop arrivals or one for a pool of closed-loop clients
(llmsim.cluster.load). They use SimPy's public API: `env.process`, `env.timeout`, plain
events and their `callbacks` lists, and `env.schedule` with a priority. The one event type of our
own, `PriorityTimeout`, marks itself triggered by setting the two attributes SimPy's own event
types set (`_ok`, `_value`, as `simpy.Timeout` does): SimPy has no public constructor for a
timeout with a priority, and an event scheduled untriggered fails when it is processed.

Event order at one simulated time t (SimPy pops events by (time, priority, creation order)):

1. **Open-loop arrivals at t** (priority URGENT). The arrivals process routes and enqueues every
   request that arrives at t in one resume. So a decision taken at a step boundary t sees every
   open-loop request that arrived at or before t.
2. **Replica step ends at t** (NORMAL; created when the step was planned, before t). A replica
   applies its step (`ReplicaEngine.finish_step`) and plans the next one at once
   (`plan_step`). Step ends of different replicas at t share nothing, so their order does not
   matter; requests that end there are handed to the client pool.
3. **Closed-loop sends at t** (NORMAL, created at t). The client pool sends from one event created
   at t, when the first request ends or a client's think time runs out at t, so it comes after
   every step end at t (those were created earlier). All sends due at t go out together, in
   client order, whatever order the replicas ended them in. A request sent at t is therefore
   first seen at the next step boundary after t; its arrival time is t.
4. **Wake-ups of idle replicas** (NORMAL, created by the enqueue): after the arrivals or sends
   that woke them, so an idle replica plans once every request of that instant is queued.

A fast-forwarded run (llmsim.cluster.fastforward) is one timeout to its last step's end; the
boundaries inside it are not events. A request that reaches a replica during a run and finds its
queue empty cuts the run at the first boundary at or after the time it is seen (t for an open-loop
arrival, just after t for a closed-loop send: see 3): the replica process is moved to a timeout at
the new end (`move_wait`). That reproduces the order above for every boundary inside a run.

`delay_to` makes a timeout land on an exact time: a run's end is a sum of step times taken one
step at a time, as step-by-step mode's clock sums them, and `now + (end - now)` can miss it in the
last bit.

Units: seconds of simulated time.
"""

from __future__ import annotations

import math

import simpy
from simpy.events import NORMAL, URGENT

ARRIVAL_PRIORITY = URGENT  # open-loop arrivals: before step ends at the same time
STEP_END_PRIORITY = NORMAL


class PriorityTimeout(simpy.events.Event):
    """A timeout scheduled with a priority (`simpy.Timeout` always uses NORMAL): triggered at
    construction with no value, as a Timeout is, and processed `delay` seconds from now."""

    def __init__(self, env: simpy.Environment, delay: float, priority: int) -> None:
        # simpy.Event.__init__ inlined, as simpy.Timeout does (one is made per arrival time)
        self.env = env
        self.callbacks = []
        self._ok = True  # triggered now, as simpy.Timeout's constructor does
        self._value = None
        env.schedule(self, priority, delay)


def delay_to(env: simpy.Environment, at_s: float) -> float:
    """A delay after which SimPy's clock reads exactly `at_s` (env.now + delay == at_s), or, where
    no delay lands on it (float spacing near env.now and at_s can make every sum skip it), the
    smallest delay that passes it."""
    now = env.now
    if at_s <= now:
        return 0.0
    delay = at_s - now
    for _ in range(4):
        landed = now + delay
        if landed == at_s:
            return delay
        delay = math.nextafter(delay, math.inf if landed < at_s else -math.inf)
    while now + delay < at_s:
        delay = math.nextafter(delay, math.inf)
    return delay


def move_wait(env: simpy.Environment, waited_on: simpy.events.Event, delay: float) -> simpy.events.Event:
    """Make the process waiting on the pending timeout `waited_on` wait instead for a new timeout
    `delay` from now, which is returned; `waited_on` is still processed later, with nothing
    waiting on it. This is what `Process.interrupt` does to the process's target, through the
    events' public `callbacks` lists, without the Interruption event and the exception thrown into
    the generator: a cut costs about half as much (a fast-forwarded run cut by an arrival, about
    once a request with load-aware routing)."""
    moved = env.timeout(delay)
    moved.callbacks, waited_on.callbacks = waited_on.callbacks, []
    return moved


class DueSends:
    """Closed-loop sends (order 3 above), for a pool of clients or sessions held by one process:
    every send due at one time goes out from one event created at that time, after every step
    end then, in the order of `key(send)`, whichever replica ended its request first.
    `release(send)` sends one; `before()`, if given, runs at every wake before the sends."""

    def __init__(self, env: simpy.Environment, release, key, before=None) -> None:
        self.env = env
        self._release, self._key, self._before = release, key, before
        self.due: list = []  # sends due now, released at the next wake
        self._wake: simpy.Event | None = None
        self.process = env.process(self._run())

    def now(self, send) -> None:
        """Due at the current time."""
        self.due.append(send)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()  # an event created now: after every step end at this time

    def at(self, at_s: float, send) -> None:
        """Due at `at_s` (a timeout to then, from that absolute time: `delay_to`)."""
        timeout = self.env.timeout(delay_to(self.env, at_s))
        timeout.callbacks.append(lambda _ev, send=send: self.now(send))

    def _run(self):
        while True:
            if self._before is not None:
                self._before()
            if self.due:
                due, self.due = sorted(self.due, key=self._key), []
                for send in due:
                    self._release(send)
            self._wake = self.env.event()
            yield self._wake
