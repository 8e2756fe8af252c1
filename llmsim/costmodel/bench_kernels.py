"""Timing machinery and the non-attention microbenchmarks of `llmsim calibrate-hardware`.

Part of llmsim.costmodel.calibrate (the only code that imports torch): callers pass the torch
module in a `BenchEnv`, so importing this module does not import torch. Every function returns
points of llmsim.costmodel.measurements; times are seconds per kernel launch (median over
samples), sizes are bytes or element counts as named.

Timing method (docs/cost-model.md §3 states it for users):
- CUDA: warm-up launches, then each sample is one CUDA-graph replay of `calls` launches between
  two CUDA events (eager launches if capture fails), divided by `calls`. `calls` is sized so a
  sample lasts about a millisecond: graphs remove the host launch gap that would otherwise hide
  the duration of microsecond kernels. Inputs that are read once per launch in a real model
  (weights, KV cache) are rotated over enough copies to exceed twice the L2 cache.
- CPU: the same with time.perf_counter around eager calls.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmsim.costmodel.measurements import AllReducePoint, BandwidthPoint, GemmPoint

_TARGET_SAMPLE_S = 1e-3  # aim for samples of ~1 ms so event resolution and launch gaps vanish
_MAX_CALLS_PER_SAMPLE = 64
_MAX_ROTATION_COPIES = 32
_CPU_RANDOM_BLOCK = 1 << 20  # CPU tensors are tiled from a random block: randn of GBs takes seconds


@dataclass
class Timer:
    """Median seconds per launch of `launch(i)` (i counts launches, for rotating inputs)."""

    torch: Any
    cuda: bool
    samples: int
    warmup: int
    graph_points: int = 0  # points timed through CUDA graphs / eagerly: for the provenance line
    eager_points: int = 0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def seconds(self, launch: Callable[[int], object], graphs: bool = True) -> float:
        estimate_s = self._warm_up(launch)
        calls = max(1, min(_MAX_CALLS_PER_SAMPLE, round(_TARGET_SAMPLE_S / max(estimate_s, 1e-9))))
        if not self.cuda:
            return self._cpu_median(launch, calls)
        graph = self._capture(launch, calls) if graphs else None
        torch = self.torch
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(self.samples)
        ]
        for start, end in events:
            start.record()
            if graph is not None:
                graph.replay()
            else:
                for i in range(calls):
                    launch(i)
            end.record()
        torch.cuda.synchronize()
        if graph is not None:
            self.graph_points += 1
        else:
            self.eager_points += 1
        del graph
        return statistics.median(start.elapsed_time(end) * 1e-3 / calls for start, end in events)

    def _warm_up(self, launch: Callable[[int], object]) -> float:
        """Run the warm-up launches; return the duration of the last one (sizes `calls`)."""
        for i in range(self.warmup - 1):
            launch(i)
        self.sync()
        if self.cuda:
            start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            start.record()
            launch(self.warmup)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e-3
        t0 = time.perf_counter()
        launch(self.warmup)
        return time.perf_counter() - t0

    def _cpu_median(self, launch: Callable[[int], object], calls: int) -> float:
        times = []
        for _ in range(self.samples):
            t0 = time.perf_counter()
            for i in range(calls):
                launch(i)
            times.append((time.perf_counter() - t0) / calls)
        self.eager_points += 1
        return statistics.median(times)

    def _capture(self, launch: Callable[[int], object], calls: int) -> Any:
        """A CUDA graph of `calls` launches, or None when the kernels cannot be captured."""
        torch = self.torch
        # Warm up on a side stream first, as torch's CUDA-graph notes require (lazy handles and
        # workspaces must not be created during capture).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(2):
                launch(i)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for i in range(calls):
                    launch(i)
            graph.replay()
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - any capture failure means: time eagerly instead
            torch.cuda.synchronize()
            return None
        return graph


@dataclass
class BenchEnv:
    """What every benchmark needs: torch, device, dtype, timer, cache and memory sizes."""

    torch: Any
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    timer: Timer
    l2_bytes: int  # 0 on CPU: no rotation there (weights of real models dwarf CPU caches anyway)
    memory_budget_bytes: int  # largest working set a single benchmark point may allocate
    tick: Callable[[str], None] = field(default=lambda label: None)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def element_bytes(self) -> int:
        return int(self.dtype.itemsize)

    def randn(self, *shape: int) -> Any:
        """Random tensor (never zeros: they run faster than real data on some GPUs)."""
        torch, numel = self.torch, math.prod(shape)
        if self.cuda or numel <= _CPU_RANDOM_BLOCK:
            return torch.randn(shape, device=self.device, dtype=self.dtype)
        block = torch.randn(_CPU_RANDOM_BLOCK, dtype=self.dtype)
        return block.repeat(-(-numel // _CPU_RANDOM_BLOCK))[:numel].view(shape)

    def rotation_copies(self, bytes_per_copy: int) -> int:
        """Copies of an input to cycle through so that together they exceed twice the L2."""
        if self.l2_bytes <= 0 or bytes_per_copy <= 0:
            return 1
        wanted = math.ceil(2 * self.l2_bytes / bytes_per_copy)
        affordable = max(1, self.memory_budget_bytes // (2 * bytes_per_copy))
        return max(1, min(wanted, affordable, _MAX_ROTATION_COPIES))


def bench_gemm(env: BenchEnv, shapes: list[tuple[int, int]], token_counts: list[int]) -> list[GemmPoint]:
    """(tokens x k) @ (k x n) for each (n, k) shape and token count.

    The weight is stored (n, k) and multiplied transposed, the memory layout of nn.Linear and of
    serving engines, so cuBLAS picks the kernels it picks in a real model.
    """
    points = [point for n, k in shapes for point in _gemm_shape(env, n, k, token_counts)]
    release(env)
    return points


def _gemm_shape(env: BenchEnv, n: int, k: int, token_counts: list[int]) -> list[GemmPoint]:
    """One weight shape over all token counts (its weight copies are freed on return)."""
    torch, points = env.torch, []
    weights = [env.randn(n, k) for _ in range(env.rotation_copies(n * k * env.element_bytes))]
    for tokens in token_counts:
        a, out = env.randn(tokens, k), torch.empty((tokens, n), device=env.device, dtype=env.dtype)

        def launch(i: int, a: Any = a, out: Any = out) -> None:
            torch.mm(a, weights[i % len(weights)].t(), out=out)

        points.append(GemmPoint(n=n, k=k, tokens=tokens, seconds=env.timer.seconds(launch)))
        env.tick(f"gemm n={n} k={k} tokens={tokens}")
    return points


def bench_host_copies(env: BenchEnv, sizes_bytes: list[int]) -> tuple[list[BandwidthPoint], list[BandwidthPoint]]:
    """Pinned host -> device and device -> host copies (KV swap pricing); empty lists on CPU."""
    if not env.cuda:
        return [], []
    torch, h2d, d2h = env.torch, [], []
    for size in sizes_bytes:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(size, dtype=torch.uint8, device=env.device)
        # Copies are >= tens of microseconds: eager launches suffice, and graphs add nothing.
        up = env.timer.seconds(lambda i, host=host, dev=dev: dev.copy_(host, non_blocking=True), graphs=False)
        h2d.append(BandwidthPoint(num_bytes=float(size), seconds=up))
        env.tick(f"host->device {size} B")
        down = env.timer.seconds(lambda i, host=host, dev=dev: host.copy_(dev, non_blocking=True), graphs=False)
        d2h.append(BandwidthPoint(num_bytes=float(size), seconds=down))
        env.tick(f"device->host {size} B")
    release(env)
    return h2d, d2h


def allreduce_possible(torch: Any, device_type: str) -> bool:
    """NCCL all-reduce needs CUDA, NCCL and at least two visible GPUs."""
    if device_type != "cuda" or torch.cuda.device_count() < 2:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_nccl_available()


def bench_allreduce(env: BenchEnv, tps: list[int], sizes_bytes: list[int], dtype_name: str) -> list[AllReducePoint]:
    """NCCL all-reduce per TP degree <= visible GPUs: one process per GPU (torch.multiprocessing
    spawn, file:// rendezvous). Each size is timed on every rank; the median over ranks counts."""
    import torch.multiprocessing as mp

    points = []
    for tp in tps:
        if tp < 2 or tp > env.torch.cuda.device_count():
            continue
        with tempfile.TemporaryDirectory(prefix="llmsim-allreduce-") as tmp:
            out_path = os.path.join(tmp, "result.json")
            init = os.path.join(tmp, "rendezvous")
            mp.spawn(
                _allreduce_worker, args=(tp, init, sizes_bytes, env.timer.samples, dtype_name, out_path), nprocs=tp
            )
            with open(out_path) as f:
                results = json.load(f)
        points += [AllReducePoint(tp=tp, num_bytes=float(b), seconds=s) for b, s in results]
        for size in sizes_bytes:
            env.tick(f"all-reduce tp={tp} {size} B")
    return points


def _allreduce_worker(
    rank: int, world: int, init_file: str, sizes: list[int], samples: int, dtype_name: str, out_path: str
) -> None:
    """One rank: each size timed as CUDA-graph replays of `calls` all-reduces (as engines run them
    inside their decode graphs; eager if capture fails), then the median over ranks of the ranks'
    medians is kept (the issue of one slow rank is a straggler, not the collective's cost)."""
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dtype = getattr(torch, dtype_name)
    results = []
    for size in sizes:
        x = torch.randn(max(1, size // torch.tensor([], dtype=dtype).element_size()), device="cuda").to(dtype)
        calls = 10 if size < (16 << 20) else 2  # amortise event overhead on small messages
        for _ in range(5):
            dist.all_reduce(x)
        run = _allreduce_graph(torch, dist, x, calls)
        times = []
        for _ in range(samples):
            dist.barrier()  # start the ranks together so one rank's late start is not counted
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e-3 / calls)
        gathered = [torch.zeros(1, device="cuda") for _ in range(world)]
        dist.all_gather(gathered, torch.tensor([statistics.median(times)], device="cuda"))
        results.append((x.numel() * x.element_size(), statistics.median(t.item() for t in gathered)))
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def _allreduce_graph(torch: Any, dist: Any, x: Any, calls: int) -> Callable[[], object]:
    """replay() of a CUDA graph of `calls` all-reduces of x, or eager launches if capture fails."""
    def eager() -> None:
        for _ in range(calls):
            dist.all_reduce(x)

    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            eager()
        graph.replay()
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 - NCCL build without graph support: time eager launches
        torch.cuda.synchronize()
        return eager
    return graph.replay


def release(env: BenchEnv) -> None:
    """Hand cached blocks back between sections so the next one sees the memory it budgets for."""
    if env.cuda:
        env.torch.cuda.synchronize()
        env.torch.cuda.empty_cache()
