"""Real forward passes of a Llama-shaped model against `llmsim step-time`: the cost model's error.

Two halves, so the GPU half needs nothing but torch and llmsim's model catalog:

    # on the GPU machine: time prefill and decode steps of random-weight models, write a CSV
    python benchmarks/forward_pass_check.py measure --models llama-2-7b,llama-3.1-8b --out measured.csv
    # anywhere: price the same shapes with llmsim profiles and print the per-shape error
    python benchmarks/forward_pass_check.py compare measured.csv --hardware h200-141g-sxm,nvidia-h200

The model is built from its catalog config in plain torch (no weights downloaded: random bf16
weights; the time of a forward pass does not depend on their values). Each layer runs what a serving
engine runs, unfused where torch has no fused kernel: RMSNorm (`F.rms_norm`), the fused QKV GEMM,
rotary embedding, attention through SDPA (flash, memory-efficient or cuDNN backend, SDPA's pick, not recorded; GQA native), KV-cache write, the output
projection, RMSNorm, the fused gate-up GEMM, SiLU-and-mul, the down GEMM; then the final norm,
the LM head on each sequence's last token and a greedy sample (argmax).

- Prefill: one prompt of T tokens. Decode: B sequences of C cached tokens each take one token
  (attending to C + 1 keys). Each step is timed twice with CUDA events, median of `--samples`
  after warm-up: replayed as one CUDA graph (`measured_s`: the kernels' own time, what the cost
  model's GPU terms price; engines capture decode this way) and launched eagerly (`eager_s`: plus
  the host's launch gaps, the regime of engines that run prefill or everything eagerly).
Units: seconds in the CSV, milliseconds in the printed table. Compare against the cost model's
GPU time (its step time less its `overheads` term: the forward pass has no scheduler) and its
whole step time.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

PREFILL_TOKENS = [128, 512, 1024, 2048, 4096, 8192]
DECODE_SHAPES = [(1, 512), (1, 4096), (8, 1024), (16, 2048), (32, 512), (32, 2048), (64, 1024), (64, 4096),
                 (128, 512), (128, 2048), (128, 4096)]
KV_BUDGET_BYTES = 80 << 30  # shapes whose cache exceeds this are skipped (and listed as skipped)
FIELDS = ["model", "phase", "batch", "tokens", "context", "measured_s", "eager_s", "device", "torch", "note"]


class Layers:
    """Random bf16 weights of every layer, and the forward pass over them (plain torch)."""

    def __init__(self, torch, arch, device, dtype):
        self.t, self.a = torch, arch
        self.qh, self.kvh, self.d = arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
        hidden, inter = arch.hidden_size, arch.intermediate_size

        def w(*shape):
            return torch.randn(shape, device=device, dtype=dtype) * 0.02

        qkv = (self.qh + 2 * self.kvh) * self.d
        experts = arch.num_local_experts if arch.is_moe else 0
        # MoE experts are stacked (E, out, in) and multiplied through one grouped GEMM per
        # projection (torch._grouped_mm), as fused-MoE kernels do; dense layers use plain GEMMs.
        mlp = (lambda: dict(router=w(experts, hidden), gate_up=w(experts, 2 * inter, hidden), down=w(experts, hidden, inter))) \
            if experts else (lambda: dict(gate_up=w(2 * inter, hidden), down=w(hidden, inter)))
        self.layers = [dict(norm1=torch.ones(hidden, device=device, dtype=dtype), qkv=w(qkv, hidden),
                            o=w(hidden, self.qh * self.d), norm2=torch.ones(hidden, device=device, dtype=dtype), **mlp())
                       for _ in range(arch.num_hidden_layers)]
        self.final_norm = torch.ones(hidden, device=device, dtype=dtype)
        self.lm_head = w(arch.vocab_size, hidden)
        self.embed = w(arch.vocab_size, hidden)

    def _rotary(self, x, cos, sin):
        half = x.shape[-1] // 2
        rotated = self.t.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _mlp(self, h, layer):
        F = self.t.nn.functional
        if "router" in layer:
            return self._moe(h, layer)
        gate_up = h @ layer["gate_up"].t()
        inter = gate_up.shape[-1] // 2
        return (F.silu(gate_up[..., :inter]) * gate_up[..., inter:]) @ layer["down"].t()

    def _moe(self, h, layer):
        """Top-k routing, tokens sorted by expert, two grouped GEMMs, weighted scatter back. No
        host synchronisation (counts via one_hot), so decode steps can be captured in a graph."""
        t, F = self.t, self.t.nn.functional
        x = h.reshape(-1, h.shape[-1])
        k, experts = self.a.num_experts_per_tok, layer["router"].shape[0]
        weights, chosen = t.topk((x @ layer["router"].t()).float().softmax(-1), k)
        flat = chosen.reshape(-1)
        order = flat.argsort()
        token_of = order // k
        offs = F.one_hot(flat, experts).sum(0).cumsum(0).to(t.int32)
        gate_up = t._grouped_mm(x[token_of], layer["gate_up"].transpose(-2, -1), offs=offs)
        inter = gate_up.shape[-1] // 2
        y = t._grouped_mm(F.silu(gate_up[:, :inter]) * gate_up[:, inter:], layer["down"].transpose(-2, -1), offs=offs)
        y = y * weights.reshape(-1)[order].unsqueeze(-1).to(y.dtype)
        return t.zeros_like(x).index_add_(0, token_of, y).view_as(h)

    def step(self, ids, caches, start, is_prefill, cos, sin):
        """One forward step. ids: (B, L) token ids; caches: per layer (K, V) of (B, kvh, ctx, d);
        new K/V are written at positions start..start+L-1. Returns the sampled ids (B,)."""
        t, F = self.t, self.t.nn.functional
        b, length = ids.shape
        x = self.embed[ids]
        eps = 1e-5
        for layer, (kc, vc) in zip(self.layers, caches):
            h = F.rms_norm(x, (x.shape[-1],), layer["norm1"], eps)
            qkv = h @ layer["qkv"].t()
            q, k, v = qkv.split([self.qh * self.d, self.kvh * self.d, self.kvh * self.d], dim=-1)
            q = self._rotary(q.view(b, length, self.qh, self.d), cos, sin).transpose(1, 2)
            k = self._rotary(k.view(b, length, self.kvh, self.d), cos, sin).transpose(1, 2)
            kc[:, :, start:start + length] = k
            vc[:, :, start:start + length] = v.view(b, length, self.kvh, self.d).transpose(1, 2)
            keys, values = kc[:, :, :start + length], vc[:, :, :start + length]
            attn = F.scaled_dot_product_attention(q, keys, values, is_causal=is_prefill, enable_gqa=self.qh != self.kvh)
            x = x + attn.transpose(1, 2).reshape(b, length, self.qh * self.d) @ layer["o"].t()
            x = x + self._mlp(F.rms_norm(x, (x.shape[-1],), layer["norm2"], eps), layer)
        last = F.rms_norm(x[:, -1], (x.shape[-1],), self.final_norm, eps)
        return t.argmax(last @ self.lm_head.t(), dim=-1)


def _events_median(torch, fn, samples):
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def _timed(torch, fn, samples, cuda):
    for _ in range(3):
        fn()
    if cuda:
        torch.cuda.synchronize()
        return _events_median(torch, fn, samples)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _caches(torch, net, batch, length, device, dtype):
    shape = (batch, net.kvh, length, net.d)
    return [(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))
            for _ in net.layers]


def _rope(torch, length, d, device, dtype):
    return torch.ones(1, length, 1, d, device=device, dtype=dtype), torch.zeros(1, length, 1, d, device=device, dtype=dtype)


def measure_prefill(torch, net, tokens, samples, device, dtype):
    """(graph-replay seconds or None on CPU, eager seconds) of one prefill of `tokens` tokens."""
    caches = _caches(torch, net, 1, tokens, device, dtype)
    ids = torch.randint(0, net.a.vocab_size, (1, tokens), device=device)
    cos, sin = _rope(torch, tokens, net.d, device, dtype)
    return _eager_and_graphed(torch, lambda: net.step(ids, caches, 0, True, cos, sin), samples, device)


def measure_decode(torch, net, batch, context, samples, device, dtype):
    """(graph-replay seconds or None on CPU, eager seconds) of one decode step at this context."""
    caches = _caches(torch, net, batch, context + 1, device, dtype)
    for kc, vc in caches:
        kc.normal_()
        vc.normal_()
    ids = torch.randint(0, net.a.vocab_size, (batch, 1), device=device)
    cos, sin = _rope(torch, 1, net.d, device, dtype)
    return _eager_and_graphed(torch, lambda: net.step(ids, caches, context, False, cos, sin), samples, device)


def _eager_and_graphed(torch, run, samples, device):
    """Median seconds of `run` launched eagerly, and replayed as one CUDA graph (None on CPU): the
    graph removes the host's launch gaps, leaving the kernels' own time."""
    cuda = device.type == "cuda"
    eager = _timed(torch, run, samples, cuda)
    if not cuda:
        return None, eager
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    graphed = _timed(torch, graph.replay, samples, True)
    del graph
    return graphed, eager


def cmd_measure(args) -> int:
    import torch

    from llmsim.costmodel import load_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    prefill = [int(x) for x in args.prefill.split(",")] if args.prefill else PREFILL_TOKENS
    decode = [tuple(int(v) for v in s.split("x")) for s in args.decode.split(",")] if args.decode else DECODE_SHAPES
    shapes = [("prefill", 1, tokens) for tokens in prefill] + [("decode", b, c) for b, c in decode]
    rows = _RowWriter(args.out)  # written row by row: a run cut short keeps what it measured
    torch.manual_seed(0)
    with torch.inference_mode(), torch.nn.attention.sdpa_kernel(_backends(torch, device)):
        for model_name in args.models.split(","):
            arch = load_model(model_name)
            if args.layers:
                arch = arch.model_copy(update={"num_hidden_layers": args.layers})
            net = Layers(torch, arch, device, dtype)
            kv_budget = KV_BUDGET_BYTES
            if device.type == "cuda":  # what the weights leave free (a MoE model takes most of the GPU)
                kv_budget = min(kv_budget, int(0.6 * torch.cuda.mem_get_info(device)[0]))
            base = dict(model=model_name, device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                        torch=torch.__version__)
            for phase, batch, size in shapes:
                row = _measure_shape(torch, net, phase, batch, size, args.samples, device, dtype, kv_budget)
                if row is not None:
                    rows.append({**base, **row, "note": row["note"] + (f", {args.layers} layers only" if args.layers else "")})
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def _measure_shape(torch, net, phase, batch, size, samples, device, dtype, kv_budget):
    """The CSV fields of one shape (size: prompt tokens for prefill, context for decode), or None
    when it is skipped (KV over budget) or fails (printed, the run goes on)."""
    label = f"{net.a.name} {phase} " + (f"{size}" if phase == "prefill" else f"{batch}x{size}")
    try:
        if phase == "prefill":
            graphed, eager = measure_prefill(torch, net, size, samples, device, dtype)
            fields = {"batch": 1, "tokens": size, "context": 0}
        else:
            kv_bytes = 2 * net.a.num_hidden_layers * batch * (size + 1) * net.kvh * net.d * dtype.itemsize
            if kv_bytes > kv_budget:
                print(f"{label}: skipped ({kv_bytes / 2**30:.0f} GiB of KV)", flush=True)
                return None
            graphed, eager = measure_decode(torch, net, batch, size, samples, device, dtype)
            fields = {"batch": batch, "tokens": batch, "context": size}
    except RuntimeError as exc:  # e.g. a kernel this torch build lacks: say so and go on
        print(f"{label}: failed ({str(exc).splitlines()[0][:200]})", flush=True)
        return None
    measured = graphed if graphed is not None else eager
    print(f"{label}: {measured * 1e3:.3f} ms (eager {eager * 1e3:.3f})", flush=True)
    return {"phase": phase, **fields, "measured_s": measured, "eager_s": eager,
            "note": "cuda graph" if graphed is not None else "eager"}


class _RowWriter(list):
    """A list of rows that appends each row to the CSV as it is added."""

    def __init__(self, path: Path):
        super().__init__()
        self._file = open(path, "w", newline="")  # noqa: SIM115 - closed by the process's end
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS)
        self._writer.writeheader()

    def append(self, row: dict) -> None:
        super().append(row)
        self._writer.writerow(row)
        self._file.flush()


def _backends(torch, device):
    from torch.nn.attention import SDPBackend

    if device.type == "cuda":
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    return [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]


def compare_rows(rows, hardware, search_dirs):
    """Per row and profile: (row, profile, predicted GPU s, predicted step s)."""
    from llmsim.costmodel import BatchShape, load_model, load_profile
    from llmsim.costmodel.tables import cost_model_for

    out = []
    for profile_name in hardware:
        profile = load_profile(profile_name, search_dirs)
        for row in rows:
            cm = cost_model_for(load_model(row["model"]), profile, 1)
            if row["phase"] == "prefill":
                shape = BatchShape((int(row["tokens"]),), (0,))
            else:
                batch, ctx = int(row["batch"]), int(row["context"]) + 1
                shape = BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * ctx, decode_context_max_tokens=ctx)
            step = cm.step_time_s(shape)
            gpu = step - cm.breakdown(shape).get("overheads", 0.0)
            out.append((row, profile_name, gpu, step))
    return out


def cmd_compare(args) -> int:
    from llmsim.cluster.build import profile_search_dirs

    with open(args.measured, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{args.measured}: no rows")
    profiles = args.hardware.split(",")
    results = compare_rows(rows, profiles, profile_search_dirs(Path.cwd()))
    by_row: dict[int, dict[str, tuple[float, float]]] = {}
    for row, profile, gpu, step in results:
        by_row.setdefault(id(row), {})[profile] = (gpu / float(row["measured_s"]) - 1, step / float(row["eager_s"]) - 1)
    print("Error of the predicted GPU time (step less overheads) against the graph-replayed pass; in brackets, of\n"
          "the whole predicted step against the eager pass. Negative: llmsim too fast.\n")
    print("| model | phase | batch x prompt/context | graphed ms | eager ms | " + " | ".join(profiles) + " |")
    print("|---|---|---|---|---|" + "---|" * len(profiles))
    for row in rows:
        shape = f"1 x {row['tokens']}" if row["phase"] == "prefill" else f"{row['batch']} x {row['context']}"
        cells = " | ".join(f"{g:+.1%} ({e:+.1%})" for g, e in (by_row[id(row)][p] for p in profiles))
        print(f"| {row['model']} | {row['phase']} | {shape} | {float(row['measured_s']) * 1e3:.2f} | "
              f"{float(row['eager_s']) * 1e3:.2f} | {cells} |")
    print("\n| profile | models | phase | rows | median abs error | median signed | worst | step vs eager: median abs |")
    print("|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for row in rows:
        kind = "MoE" if _is_moe(row["model"]) else "dense"
        for p in profiles:
            groups.setdefault((p, kind, row["phase"]), []).append(by_row[id(row)][p])
    for (p, kind, phase), errs in sorted(groups.items()):
        g = [e for e, _ in errs]
        print(f"| {p} | {kind} | {phase} | {len(g)} | {statistics.median(abs(e) for e in g):.1%} | "
              f"{statistics.median(g):+.1%} | {max(g, key=abs):+.1%} | {statistics.median(abs(e) for _, e in errs):.1%} |")
    return 0


def _is_moe(model_name: str) -> bool:
    from llmsim.costmodel import load_model

    return load_model(model_name).is_moe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time real forward passes (GPU; CPU for a smoke test)")
    m.add_argument("--models", default="llama-2-7b,llama-3.1-8b")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--device", default=None)
    m.add_argument("--samples", type=int, default=10)
    m.add_argument("--layers", type=int, default=None, help="override the layer count (smoke tests)")
    m.add_argument("--prefill", default=None, help="comma-separated prompt lengths")
    m.add_argument("--decode", default=None, help="comma-separated BATCHxCONTEXT, e.g. 1x512,32x2048")
    c = sub.add_parser("compare", help="price the measured shapes with llmsim profiles")
    c.add_argument("measured", type=Path)
    c.add_argument("--hardware", default="h200-141g-sxm")
    args = p.parse_args(argv)
    return cmd_measure(args) if args.cmd == "measure" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
