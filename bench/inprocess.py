"""The in-process ceiling: the model called directly, at its best batch size. Prints one JSON line.

`python -m bench.inprocess SCENARIO COUNT fp32|bf16|openvino`: `fp32` is what users get from sentence-transformers
by default; `bf16` runs under bf16 autocast where the CPU computes bf16 natively (fp32 elsewhere); `openvino` is
sentence-transformers with `backend="openvino"` (bench/scenarios.py, on_openvino).
"""

import json
import sys
import time
from contextlib import nullcontext

from bench.corpus import build_corpus
from bench.scenarios import SCENARIOS
from services.runtime.precision import Precision, cpu_bf16_flags


def precision_for(mode: str) -> tuple[str, object]:
    if mode == "openvino":
        return "openvino", nullcontext()
    if mode == "bf16" and cpu_bf16_flags():
        import torch

        return "bfloat16", Precision(torch.float32, torch.bfloat16).context()
    return "float32", nullcontext()


def main() -> None:
    name, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    scenario = SCENARIOS[name]
    run = scenario.in_process("openvino" if mode == "openvino" else "torch")
    items = scenario.items(build_corpus(count))
    dtype, context = precision_for(mode)
    best = None
    with context:
        run(items[:64], 32)
        for batch_size in scenario.batch_sizes:
            started = time.perf_counter()
            run(items, batch_size)
            rate = len(items) / (time.perf_counter() - started)
            if best is None or rate > best["rate"]:
                best = {"rate": rate, "batch_size": batch_size, "dtype": dtype}
    print(json.dumps(best))


if __name__ == "__main__":
    main()
