"""Measured throughput as `valuedrift plan` reads it: one JSON file per device.

    {"device": "...", "flops_per_s": {"generate": ..., "forward": ..., "train": ...},
     "measured": {"generate": {...the benchmark's figures...}, ...}}

Throughput is stored as FLOP/s at about 2·N FLOPs per token for a forward pass (generation,
hidden states, judging) and 6·N per token for a training step, N the benchmark model's parameters,
so the plan can scale it to models of other sizes. Each benchmark updates its own operation.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

FLOPS_PER_TOKEN = {"generate": 2, "forward": 2, "train": 6}  # times the parameter count


def device(threads: int, dtype: str) -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, {dtype}"
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():  # Linux names the model there
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"CPU ({cpu}), {threads} threads, {dtype}"


def save(path: str, operation: str, tokens_per_s: float, parameters: float, figures: dict) -> None:
    """Adds one operation's measured throughput to the costs file at `path` (written atomically)."""
    target = Path(path)
    costs = json.loads(target.read_text()) if target.is_file() else {"flops_per_s": {}, "measured": {}}
    costs["device"] = figures["device"]
    costs["flops_per_s"][operation] = round(tokens_per_s * FLOPS_PER_TOKEN[operation] * parameters)
    costs["measured"][operation] = {**figures, "tokens_per_s": tokens_per_s, "parameters": int(parameters),
                                    "date": time.strftime("%Y-%m-%d")}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(costs, indent=2) + "\n")
    os.replace(tmp, target)
