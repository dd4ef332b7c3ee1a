"""The in-process ceiling: the model called directly, at its best batch size. Prints one JSON line."""

import json
import sys
import time

from bench.corpus import build_corpus
from bench.scenarios import SCENARIOS


def main() -> None:
    name, count = sys.argv[1], int(sys.argv[2])
    scenario = SCENARIOS[name]
    run = scenario.in_process()
    items = scenario.items(build_corpus(count))
    run(items[:64], 32)
    best = None
    for batch_size in scenario.batch_sizes:
        started = time.perf_counter()
        run(items, batch_size)
        rate = len(items) / (time.perf_counter() - started)
        if best is None or rate > best["rate"]:
            best = {"rate": rate, "batch_size": batch_size}
    print(json.dumps(best))


if __name__ == "__main__":
    main()
