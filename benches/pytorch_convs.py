#!/usr/bin/env python3
"""PyTorch's side of benches/conv_table.rs: the same convolution shapes through cuDNN, and the
table that joins both sides (scripts/gpu-check's `convs` stage).

  conv_table --list --batches 1,16,128 | benches/pytorch_convs.py [--iters 20] [--reps 5]
      one `torch key=... batch=... torch_ms=...` line per shape: torch.nn.functional.conv2d, bf16
      input, weight and bias, channels_last, torch.backends.cudnn.benchmark = True (the first
      calls pick cuDNN's algorithm and are warm-up). Timed as src/gpu/timing.rs times ours: `reps`
      batches of `iters` calls between CUDA events, the L2 overwritten (a buffer twice its size)
      before each batch, the median batch over `iters`. Inputs are random, never zeros. A shape
      padded unevenly (diffusers' Downsample2D pads right and bottom with F.pad first) is padded
      before timing and convolved with padding 0: the convolution alone, as ours is timed.
      Without torch or a CUDA device: one `torch absent: ...` line, exit 0.
  benches/pytorch_convs.py --join OURS_LOG TORCH_LOG [--summary]
      the joined table (ours ms, TFLOP/s, % of the bf16 peak, f32 ms, torch ms, torch/ours);
      --summary: the count-weighted totals per batch and the heaviest rows of the largest batch.
"""
import argparse
import statistics
import sys


def fields(line):
    """`word key=value key=value ...` -> {key: value}."""
    return dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)


def time_shapes(lines, iters, reps):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"torch absent: {e}")
        return
    if not torch.cuda.is_available():
        print("torch absent: torch sees no CUDA device")
        return
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    flush = torch.empty(2 * props.L2_cache_size, dtype=torch.uint8, device=dev)
    print(f"torch {torch.__version__} cudnn {torch.backends.cudnn.version()} on {props.name}; "
          f"{iters} calls per batch, median of {reps} batches")
    for line in lines:
        if not line.startswith("shape "):
            continue
        f = fields(line)
        n, h, w, cin, cout, k, stride = (int(f[x]) for x in ("batch", "h", "w", "cin", "cout", "k", "stride"))
        top, bottom, left, right = (int(v) for v in f["pad"].split(","))
        rand = lambda *s: (torch.rand(*s, device=dev) * 2 - 1).to(torch.bfloat16)  # noqa: E731
        x = rand(n, cin, h, w)
        even = top == bottom == left == right
        if not even:
            x = F.pad(x, (left, right, top, bottom))
        x = x.contiguous(memory_format=torch.channels_last)
        wt = rand(cout, cin, k, k).contiguous(memory_format=torch.channels_last)
        b = rand(cout)
        pad = top if even else 0
        call = lambda: F.conv2d(x, wt, b, stride=stride, padding=pad)  # noqa: E731
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / iters)
        print(f"torch key={f['key']} batch={n} torch_ms={statistics.median(times):.4f}", flush=True)


def join(ours_log, torch_log, summary):
    ours = [fields(ln) for ln in open(ours_log) if ln.startswith("conv ")]
    try:
        torch_lines = open(torch_log).read().splitlines()
    except OSError:
        torch_lines = ["torch absent: no PyTorch log"]
    theirs = {(f["key"], f["batch"]): f["torch_ms"] for f in map(fields, torch_lines) if "torch_ms" in f}
    absent = next((ln for ln in torch_lines if ln.startswith("torch absent")), None)
    num = lambda v: float(v) if v not in (None, "-") else None  # noqa: E731
    rows = []
    for o in ours:
        mine, tm = num(o["ours_ms"]), num(theirs.get((o["key"], o["batch"])))
        rows.append((o, mine, tm, f"{tm / mine:.2f}" if mine and tm else "-"))
    head = f"{'shape':28} {'batch':>5} {'n':>3} {'ours ms':>9} {'TFLOP/s':>8} {'%peak':>6} {'f32 ms':>9} {'torch ms':>9} {'torch/ours':>10}"
    table = [head] + [
        f"{o['key']:28} {o['batch']:>5} {o['count']:>3} {o['ours_ms']:>9} {o['tflops']:>8} {o['peak_pct']:>6} "
        f"{o['f32_ms']:>9} {theirs.get((o['key'], o['batch']), '-'):>9} {ratio:>10}"
        + ("  (in_c 3: not on tensor cores; f32 only)" if "note" in o else "")
        for o, _, _, ratio in rows
    ]
    if absent:
        table.append(f"torch column absent ({absent[len('torch absent: '):]})")
    if not summary:
        print("\n".join(table))
        return
    for batch in sorted({o["batch"] for o, *_ in rows}, key=int):
        sel = [(o, m, t) for o, m, t, _ in rows if o["batch"] == batch and m]
        mine = sum(int(o["count"]) * m for o, m, _ in sel)
        both = [(o, m, t) for o, m, t in sel if t]
        cmp = ""
        if both and len(both) == len(sel):
            theirs_total = sum(int(o["count"]) * t for o, _, t in both)
            cmp = f"; torch {theirs_total:.3f} ms, torch/ours {theirs_total / mine:.2f}"
        print(f"batch {batch}: ours {mine:.3f} ms for the forward's {sum(int(o['count']) for o, *_ in sel)} "
              f"tensor-core convs timed (count-weighted){cmp}")
    last = max((o["batch"] for o, *_ in rows), key=int, default=None)
    heavy = sorted((r for r in rows if r[0]["batch"] == last), key=lambda r: -int(r[0]["count"]) * float(r[0]["gflop"]))
    print(table[0])
    print("\n".join(table[1 + rows.index(r)] for r in heavy[:6]))
    if absent:
        print(table[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--join", nargs=2, metavar=("OURS_LOG", "TORCH_LOG"))
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    if a.join:
        join(a.join[0], a.join[1], a.summary)
    else:
        time_shapes(sys.stdin.read().splitlines(), a.iters, a.reps)


if __name__ == "__main__":
    main()
