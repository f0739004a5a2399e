"""The peers' shared timing: a train step timed as the diffusion peer times its own, and the one
``RESULT {json}`` line ``bench/cpu_peer.py`` reads."""

import json
import statistics
import time

import torch


def report_train(model: str, step, batch: int, seconds: float, mode: str) -> None:
    """Time ``step()``: one first call (``torch.compile`` compiles there), 3 warm-up calls, then
    at least 5 and for at least ``seconds``; print img/s at the median step and the peak RSS."""
    out = {
        "side": "peer",
        "what": "train",
        "model": model,
        "batch": batch,
        "mode": mode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    t0 = time.perf_counter()
    step()
    out["compile_first_step_s"] = time.perf_counter() - t0
    for _ in range(3):
        step()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out["step_median_s"] = statistics.median(times)
    out["img_s"] = batch / out["step_median_s"]
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    out["peak_rss"] = int(hwm.split()[1]) * 1024
    print("RESULT " + json.dumps(out), flush=True)
