"""Where the points of a sweep or a capacity search run: one small interface, three back ends.

`Executor.map(fn, items, on_done=None) -> list` applies a picklable top-level function to every
item and returns the results in input order; `on_done(index, result)` is called in the parent as
each one finishes (in completion order), which is what drives progress bars.

- `LocalExecutor(max_workers=None)`: a `concurrent.futures.ProcessPoolExecutor` on this machine,
  all cores by default (processes started with "spawn", so it is safe under threads, notebooks and
  every OS). `max_workers=1` runs the items in this process, one after the other (no pool at all).
- `DaskExecutor("dask://HOST:PORT")`: a running Dask scheduler (`dask scheduler` +
  `dask worker tcp://HOST:PORT` on each machine); its workers need llmsim installed and must see
  the scenario's trace and model files at the same absolute paths (a shared file system or the
  same checkout location).
- `DaskExecutor("dask://local")` (or `dask://local:N`): a `dask.distributed.LocalCluster` of N
  single-threaded worker processes (default: all cores), started on first use and closed with the
  executor. Useful to test a Dask set-up without a cluster. Its workers ignore SIGINT and log
  Dask's errors only; after a KeyboardInterrupt in `map`, `close()` stops them quietly within
  `INTERRUPTED_CLOSE_S`, so Ctrl-C ends `llmsim sweep` with the CLI's one line. A Ctrl-C while
  the cluster starts (about 2 s) is ignored: the workers can only inherit an ignored SIGINT.

`make_executor(spec)` builds one from a string: `local`, `local:N`, `dask://local`,
`dask://local:N`, `dask://HOST:PORT` (an `Executor` passes through unchanged). Dask is imported
only when a Dask executor is used; without it, `LlmsimError` says `pip install 'llmsim[dask]'`.

Every point of llmsim is a pure function of (scenario, scheduler, load, seed), seeded explicitly,
so the results do not depend on the executor, the number of workers or the completion order.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

from .errors import LlmsimError

OnDone = Callable[[int, Any], None]
DASK_HINT = "pip install 'llmsim[dask]'"
INTERRUPTED_CLOSE_S = 5  # after Ctrl-C: how long the Dask client and cluster get to close
WORKER_LOG_ENV = "DASK_LOGGING__DISTRIBUTED"  # Dask's log level, read by each worker process at start


class Executor:
    """Runs `fn` over `items`; results in input order. Use as a context manager or call close()."""

    name = "executor"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_done: OnDone | None = None) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (a no-op where there are none)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class LocalExecutor(Executor):
    """A process pool on this machine; `max_workers` defaults to the number of cores. The pool is
    created on the first `map` and kept until `close()`, so repeated maps reuse warm workers."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise LlmsimError(f"executor: max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.name = f"local:{self.max_workers}"
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, items, on_done=None) -> list:
        items = list(items)
        if self.max_workers == 1 or len(items) <= 1:
            results = []
            for i, item in enumerate(items):
                results.append(fn(item))
                if on_done is not None:
                    on_done(i, results[-1])
            return results
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.max_workers, mp_context=multiprocessing.get_context("spawn"))
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        results: list = [None] * len(items)
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    i = futures[fut]
                    results[i] = fut.result()  # re-raises a worker's exception here
                    if on_done is not None:
                        on_done(i, results[i])
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Points as Dask tasks: `dask://HOST:PORT` connects to a running scheduler, `dask://local[:N]`
    starts a LocalCluster of N single-threaded worker processes (default: all cores)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.name = address
        self._client = None
        self._cluster = None
        self._local_workers: int | None = None
        self._interrupted = False
        rest = address.removeprefix("dask://")
        if rest == "local" or rest.startswith("local:"):
            n = rest.partition(":")[2]
            if n and not (n.isdigit() and int(n) >= 1):
                raise LlmsimError(f"executor {address!r}: expected dask://local or dask://local:N with N >= 1 workers")
            self._local_workers = int(n) if n else (os.cpu_count() or 1)
        elif not rest or ":" not in rest:
            raise LlmsimError(f"executor {address!r}: expected dask://HOST:PORT (a running Dask scheduler) or dask://local[:N]")
        _import_distributed()  # fail early, with the install hint

    @property
    def client(self):
        if self._client is None:
            distributed = _import_distributed()
            if self._local_workers is not None:
                with _quiet_workers():  # they ignore Ctrl-C (this process stops them) and log errors only
                    self._cluster = distributed.LocalCluster(  # dashboard on a free port: never a clash
                        n_workers=self._local_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
                    )
                self._client = distributed.Client(self._cluster)
            else:
                target = "tcp://" + self.address.removeprefix("dask://")
                try:
                    self._client = distributed.Client(target, timeout="20s")
                except OSError as e:
                    raise LlmsimError(f"executor {self.address!r}: cannot reach a Dask scheduler at {target}: {e}") from None
        return self._client

    def map(self, fn, items, on_done=None) -> list:
        items = list(items)
        if not items:
            return []
        distributed = _import_distributed()
        results: list = [None] * len(items)
        futures: list = []
        try:
            client = self.client
            futures = client.map(fn, items, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in distributed.as_completed(futures):
                i = index[fut.key]
                results[i] = fut.result()  # re-raises a worker's exception here
                if on_done is not None:
                    on_done(i, results[i])
        except KeyboardInterrupt:
            self._interrupted = True  # close() then shuts down quietly: the user asked to stop
            raise
        except BaseException:
            if futures:
                client.cancel(futures)
            raise
        return results

    def close(self) -> None:
        if self._interrupted:
            _quiet_dask_logs()
        timeout = {"timeout": INTERRUPTED_CLOSE_S} if self._interrupted else {}
        try:
            if self._client is not None:
                self._client.close(**timeout)
            if self._cluster is not None:
                self._cluster.close(**timeout)
        except Exception:
            if not self._interrupted:  # after Ctrl-C, a worker that will not stop is no news
                raise
        finally:
            self._client = self._cluster = None


@contextlib.contextmanager
def _quiet_workers():
    """Worker processes started meanwhile ignore SIGINT and log Dask's errors only.

    A Ctrl-C in the terminal goes to the whole process group; the workers inherit the ignored
    SIGINT (main thread only: elsewhere Python cannot change it), so only this process is
    interrupted and it stops them. Their Dask log level comes from the environment they start
    with (`DASK_LOGGING__DISTRIBUTED`, unless the user set it): warnings about tasks cancelled at
    shutdown stay out of the terminal. Both are restored here afterwards.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    own_level = WORKER_LOG_ENV not in os.environ
    if own_level:
        os.environ[WORKER_LOG_ENV] = "error"
    try:
        yield
    finally:
        if own_level:
            os.environ.pop(WORKER_LOG_ENV, None)
        if main:
            signal.signal(signal.SIGINT, previous)


def _quiet_dask_logs() -> None:
    """Silence Dask's loggers in this process: after Ctrl-C its shutdown chatter (cancelled tasks,
    workers killed after a grace period) would bury llmsim's one line."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _import_distributed():
    try:
        import dask.distributed as distributed
    except ImportError:
        raise LlmsimError(f"the Dask executor needs dask.distributed, which is not installed: {DASK_HINT}") from None
    return distributed


def make_executor(spec: "str | Executor | None" = "local") -> Executor:
    """`local`, `local:N`, `dask://local`, `dask://local:N`, `dask://HOST:PORT`, or an Executor."""
    if isinstance(spec, Executor):
        return spec
    spec = (spec or "local").strip()
    if spec == "local":
        return LocalExecutor()
    if spec.startswith("local:"):
        n = spec.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise LlmsimError(f"executor {spec!r}: expected local:N with N >= 1 worker processes")
        return LocalExecutor(int(n))
    if spec.startswith("dask://"):
        return DaskExecutor(spec)
    raise LlmsimError(f"unknown executor {spec!r}; expected local, local:N, dask://local[:N] or dask://HOST:PORT")
