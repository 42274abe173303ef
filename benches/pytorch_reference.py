#!/usr/bin/env python3
"""The PyTorch/diffusers side of `ddpm bench`: the same workloads on diffusers' UNet2DModel with the
same config, printed in the same table (or --json lines), so one script shows both engines.

  training step: forward, F.mse_loss, backward, torch.optim.AdamW step
  sampling step: one UNet forward (no grad) and a DDPMScheduler step
  whole run:     DDIM sampling, DDIMScheduler(num_train_timesteps=1000).set_timesteps(--run-steps, 50),
                 `eps = unet(x, t).sample; x = scheduler.step(eps, t, x).prev_sample` for every t
                 under no_grad; median_ms is the whole run, per_image_ms that over the batch

Engines: torch-eager, torch-compile (torch.compile, inductor; on the CPU too), torch-autotune
(torch.compile with mode="max-autotune"), and on CUDA torch-cudagraph (torch.compile with
mode="reduce-overhead", which replays CUDA graphs) for sampling. Each runs in f32 (the reference
every precision of ours is compared against), or with the suffix -bf16 (torch-eager-bf16,
torch-cudagraph-bf16, ...) as a diffusers user tunes it: torch.autocast(bfloat16) around the model
and the loss, the model and its input in channels_last; the scheduler step and AdamW stay f32. Median of --iters runs after
--warmup; a compiled engine keeps warming up until a call compiles nothing new (torch._dynamo's
frame counter), so compilation is never timed (the warm-up time is reported as warmup_s). CUDA
events on a GPU. A failed engine (e.g. inductor without a working C++ compiler) prints one line and,
with --json, a {"failed": ...} record; the others still run. The FLOP count comes from
`ddpm bench --describe` (the engine's own count, so both sides divide the same number); the config too.

usage: benches/pytorch_reference.py --device cpu|cuda --preset tiny|cifar10 --batch 1 16 --what sample train run [--json]
       benches/pytorch_reference.py --info             one JSON line: torch/diffusers versions, CPU capability
       benches/pytorch_reference.py --check-compile    exit 0 if torch.compile (inductor) works here, else 1
                                                       with one line saying why
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def describe(ddpm, preset):
    out = subprocess.run([ddpm, "bench", "--preset", preset, "--describe"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def one_line(e):
    """An exception as one short line (inductor's errors run to dozens of lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return msg if len(msg) <= 240 else msg[:237] + "..."


def dynamo_frames():
    """How many frames torch.compile has compiled so far (recompiles included); None if unknown."""
    try:
        from torch._dynamo.utils import counters
        return sum(counters["frames"].values())
    except Exception:
        return None


def timed(fn, iters, warmup, device, compiled):
    """Median ms of `iters` runs after at least `warmup` runs; a compiled engine warms up until a
    call compiles nothing new (at most 20 calls), so the timed runs never include compilation."""
    t0 = time.perf_counter()
    done = 0
    while True:
        before = dynamo_frames()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        done += 1
        # the counter unknown (another torch): three calls compile everything torch.compile compiles
        settled = not compiled or (dynamo_frames() == before if before is not None else done >= 3)
        if not compiled and done >= warmup:
            break
        if compiled and done >= max(warmup, 2) and settled:
            break
        if done >= max(warmup, 20):
            break
    warmup_s = time.perf_counter() - t0
    frames = dynamo_frames()
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    if compiled and frames is not None and dynamo_frames() != frames:
        raise RuntimeError("torch.compile recompiled during the timed runs (warm-up did not settle)")
    return statistics.median(times), len(times), done, warmup_s


ENGINES = ("torch-eager", "torch-compile", "torch-autotune", "torch-cudagraph")
COMPILE_MODES = {"torch-compile": "default", "torch-autotune": "max-autotune", "torch-cudagraph": "reduce-overhead"}


def split_engine(engine):
    """(base engine, precision) of a name like torch-compile-bf16."""
    base, bf16 = (engine[:-5], True) if engine.endswith("-bf16") else (engine, False)
    if base not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} ({', '.join(ENGINES)}, each optionally with -bf16)")
    return base, "bf16" if bf16 else "f32"


def wrap(model, engine):
    """The model as the engine calls it: compiled in the engine's mode, and for -bf16 engines
    under bf16 autocast in channels_last (the input is converted by the caller)."""
    base, precision = split_engine(engine)
    net = torch.compile(model, mode=COMPILE_MODES[base]) if base in COMPILE_MODES else model
    if precision == "f32":
        return net
    model.to(memory_format=torch.channels_last)
    device_type = next(model.parameters()).device.type

    def autocast(x, t):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return net(x, t)
    return autocast


def workload(model, what, batch, cfg, device, engine, run_steps):
    from diffusers import DDIMScheduler, DDPMScheduler
    size, ch = cfg["sample_size"], cfg["in_channels"]
    x = torch.randn(batch, ch, size, size, device=device)
    if split_engine(engine)[1] == "bf16":
        x = x.to(memory_format=torch.channels_last)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    if what == "sample":
        net = wrap(model, engine)
        scheduler = DDPMScheduler()
        scheduler.set_timesteps(1000)

        @torch.no_grad()
        def step():
            out = net(x, t).sample.float()
            scheduler.step(out, 500, x)
        return step
    if what == "run":
        net = wrap(model, engine)
        scheduler = DDIMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(run_steps)
        steps = [(int(s), torch.full((batch,), int(s), device=device, dtype=torch.long)) for s in scheduler.timesteps]

        @torch.no_grad()
        def run():
            xt = x
            for s, ts in steps:  # timesteps as tensors: a compiled UNet sees one graph for every step
                eps = net(xt, ts).sample.float()
                xt = scheduler.step(eps, s, xt).prev_sample
            return xt
        return run
    if what != "train":
        raise ValueError(f"unknown workload {what!r} (sample, train or run)")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    net = wrap(model, engine)
    eps = torch.randn_like(x)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x, t).sample.float(), eps)
        loss.backward()
        opt.step()
    return step


def info(threads):
    import diffusers
    cap = None
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "cpu_capability": cap,
            "threads": threads or torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}


def check_compile(device):
    """A tiny function through inductor: fails fast (seconds, not a UNet trace) where no C++ compiler
    (or on CUDA, no Triton) works."""
    try:
        f = torch.compile(lambda a: torch.nn.functional.silu(a) * 2 + 1)
        a = torch.randn(64, device=device)
        torch.testing.assert_close(f(a), torch.nn.functional.silu(a) * 2 + 1)
    except Exception as e:
        print(f"torch.compile (inductor, {device}) does not work here: {one_line(e)}")
        return 1
    print(f"torch.compile (inductor, {device}) works")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", nargs="+", default=["cifar10"])
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--what", nargs="+", default=["sample"], help="sample train run")
    p.add_argument("--engines", nargs="+", default=None,
                   help="torch-eager torch-compile torch-autotune torch-cudagraph, each also with -bf16")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--run-steps", type=int, default=50, help="DDIM steps of the whole-run workload")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    p.add_argument("--ddpm", default=str(Path(__file__).resolve().parents[1] / "target/release/ddpm"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--info", action="store_true", help="print versions and the CPU capability as JSON, and exit")
    p.add_argument("--check-compile", action="store_true", help="exit 0 if torch.compile works on --device, else 1")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.info:
        print(json.dumps(info(a.threads)))
        return 0
    if a.check_compile:
        return check_compile(a.device)
    from diffusers import UNet2DModel
    engines = a.engines or (["torch-eager", "torch-compile"] + (["torch-cudagraph"] if a.device == "cuda" else []))
    for preset in a.preset:
        d = describe(a.ddpm, preset)
        cfg = {k: v for k, v in d["config"].items() if not k.startswith("_")}
        for what in a.what:
            for batch in a.batch:
                for engine in engines:
                    base, precision = split_engine(engine)
                    if base == "torch-cudagraph" and (what == "train" or a.device != "cuda"):
                        continue
                    rec = {"engine": engine, "device": a.device, "preset": preset, "batch": batch, "what": what,
                           "precision": precision}
                    try:
                        torch.manual_seed(0)
                        model = UNet2DModel(**cfg).to(a.device)
                        model.train(what == "train")
                        fn = workload(model, what, batch, cfg, a.device, engine, a.run_steps)
                        median_ms, runs, warmups, warmup_s = timed(fn, a.iters, a.warmup, a.device, base != "torch-eager")
                    except Exception as e:  # e.g. torch.compile without a working compiler
                        msg = one_line(e)
                        print(f"{engine} {preset} {what} batch {batch}: failed: {msg}", file=sys.stderr)
                        if a.json:
                            print(json.dumps({**rec, "failed": msg}))
                        sys.stdout.flush()
                        continue
                    forwards = a.run_steps if what == "run" else 1
                    flops = d["forward_flops_per_image"] * batch * (3 if what == "train" else forwards)
                    gflops = flops / (median_ms / 1e3) / 1e9
                    rec.update({"median_ms": median_ms, "gflops": gflops, "runs": runs, "warmup_runs": warmups,
                                "warmup_s": round(warmup_s, 2)})
                    if what == "run":
                        rec.update({"steps": a.run_steps, "per_image_ms": median_ms / batch})
                    if a.json:
                        print(json.dumps(rec))
                    else:
                        per = f"  {median_ms / batch:.3f} ms/image" if what == "run" else ""
                        print(f"{engine:<15} {preset:<9} {what:<7} batch {batch:>3}  {median_ms:>10.3f} ms  {gflops:>9.1f} GFLOP/s"
                              f"{per}  ({runs} runs after {warmups} warm-up, {a.device})")
                    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
