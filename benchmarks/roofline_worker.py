"""Worker (d): this machine's sustained matmul throughput (fp32 and bf16), measured in the same run as the rest.

Spec: {"sizes": [512, 1024, 2048], "seconds": 1.0, "threads"}. For each dtype the best GFLOP/s over square sizes
(2·n³ FLOPs per matmul, repeated for about ``seconds``) is the peak that MFU is measured against.
"""

from __future__ import annotations

import torch

from benchmarks.common import clock, emit, read_spec, setup_torch


def matmul_gflops(n: int, dtype: torch.dtype, seconds: float) -> float:
    """Sustained GFLOP/s of an n×n @ n×n matmul in ``dtype`` over about ``seconds``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b, out=out)
    reps, t0 = 0, clock()
    while (elapsed := clock() - t0) < seconds:
        torch.matmul(a, b, out=out)
        reps += 1
    return 2 * n**3 * reps / elapsed / 1e9


def main() -> None:
    spec = read_spec()
    setup_torch(spec.get("threads"))
    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        per_size = {str(n): matmul_gflops(n, dtype, spec.get("seconds", 1.0)) for n in spec["sizes"]}
        result[name] = {"peak_gflops": max(per_size.values()), "by_size": per_size}
    emit(result)


if __name__ == "__main__":
    main()
