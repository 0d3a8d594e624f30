"""Vendor peak figures of the GPUs `valuedrift plan --gpu` estimates device time for.

These are datasheet peaks, not what a job reaches: the plan scales the FLOP rate by a model-FLOPs
utilisation (MFU) and holds decoding to the bandwidth as a ceiling, so its GPU-hours are estimates
at a stated MFU, with decoding at its fastest possible, never measurements.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str                   # what --gpu takes
    model: str                  # the form factor the figures are for
    flops_per_s: float          # dense BF16 tensor-core peak (the datasheets' "with sparsity" figure halved)
    bytes_per_s: float          # HBM bandwidth


GPUS = {g.name: g for g in (
    # NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: BF16 1,979 TFLOP/s with sparsity, HBM3 3.35 TB/s
    GPU("H100", "H100 SXM", 989e12, 3.35e12),
    # NVIDIA H200 Tensor Core GPU datasheet, SXM column: the H100's compute, HBM3e 4.8 TB/s
    GPU("H200", "H200 SXM", 989e12, 4.8e12),
    # NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM column: BF16 624 TFLOP/s with sparsity, HBM2e 2,039 GB/s
    GPU("A100", "A100 SXM 80GB", 312e12, 2.039e12),
)}
