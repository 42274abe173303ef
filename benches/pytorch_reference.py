#!/usr/bin/env python3
"""The PyTorch/diffusers side of `ddpm bench`: the same workloads on diffusers' UNet2DModel with the
same config, printed in the same table (or --json lines), so one script shows both engines.

  training step: forward, F.mse_loss, backward, torch.optim.AdamW step
  sampling step: one UNet forward (no grad) and a DDPMScheduler step

Engines: torch-eager, torch-compile (torch.compile), and on CUDA torch-cudagraph (torch.compile
with mode="reduce-overhead", which replays CUDA graphs) for sampling. Median of --iters runs after
--warmup, CUDA events on a GPU. The FLOP count comes from `ddpm bench --describe` (the engine's
own count, so both sides divide the same number); the config too.

usage: benches/pytorch_reference.py --device cpu|cuda --preset tiny|cifar10 --batch 1 16 --what sample train [--json]
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


def timed(fn, iters, warmup, device):
    for _ in range(warmup):
        fn()
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
    return statistics.median(times), len(times)


def workloads(model, scheduler, what, batch, cfg, device, engine):
    size, ch = cfg["sample_size"], cfg["in_channels"]
    x = torch.randn(batch, ch, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    if what == "sample":
        net = model
        if engine == "torch-compile":
            net = torch.compile(model)
        elif engine == "torch-cudagraph":
            net = torch.compile(model, mode="reduce-overhead")

        @torch.no_grad()
        def step():
            out = net(x, t).sample
            scheduler.step(out, 500, x)
        return step
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    net = torch.compile(model) if engine == "torch-compile" else model
    eps = torch.randn_like(x)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x, t).sample, eps)
        loss.backward()
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", nargs="+", default=["cifar10"])
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--what", nargs="+", default=["sample"])
    p.add_argument("--engines", nargs="+", default=None, help="torch-eager torch-compile torch-cudagraph")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    p.add_argument("--ddpm", default=str(Path(__file__).resolve().parents[1] / "target/release/ddpm"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    from diffusers import DDPMScheduler, UNet2DModel
    if a.threads:
        torch.set_num_threads(a.threads)
    engines = a.engines or (["torch-eager", "torch-compile"] + (["torch-cudagraph"] if a.device == "cuda" else []))
    for preset in a.preset:
        d = describe(a.ddpm, preset)
        cfg = {k: v for k, v in d["config"].items() if not k.startswith("_")}
        for what in a.what:
            for batch in a.batch:
                for engine in engines:
                    if engine == "torch-cudagraph" and (what != "sample" or a.device != "cuda"):
                        continue
                    torch.manual_seed(0)
                    model = UNet2DModel(**cfg).to(a.device)
                    model.train(what == "train")
                    scheduler = DDPMScheduler()
                    scheduler.set_timesteps(1000)
                    fn = workloads(model, scheduler, what, batch, cfg, a.device, engine)
                    try:
                        median_ms, runs = timed(fn, a.iters, a.warmup, a.device)
                    except Exception as e:  # e.g. torch.compile without a working compiler
                        print(f"{engine} {preset} {what} batch {batch}: failed: {e}", file=sys.stderr)
                        continue
                    flops = d["forward_flops_per_image"] * batch * (3 if what == "train" else 1)
                    gflops = flops / (median_ms / 1e3) / 1e9
                    if a.json:
                        print(json.dumps({"engine": engine, "device": a.device, "preset": preset, "batch": batch, "what": what,
                                          "median_ms": median_ms, "gflops": gflops, "runs": runs}))
                    else:
                        print(f"{engine:<15} {preset:<9} {what:<7} batch {batch:>3}  {median_ms:>10.3f} ms  {gflops:>9.1f} GFLOP/s  ({runs} runs, {a.device})")
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
