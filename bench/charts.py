"""Charts of a `make bench` report (matplotlib): served vs in-process per load, latency percentiles, and the
response cache's gain against its hit ratio. `make bench` draws them at the end of its run, next to its JSON
and into docs/charts/ (the Performance page shows those); `python -m bench.charts REPORT.json` draws them
for an earlier report."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS_CHARTS = ROOT / "docs/charts"
COMMAND = "make bench"


def _caption(figure, report: dict) -> None:
    machine = report["machine"]
    figure.text(0.01, 0.01, f"{report['when']} · {machine['cpu']}, {machine['cores']} cores, GPU: "
                f"{machine['gpu'] or 'none'} · {COMMAND}", fontsize=7, color="#555")


def _loads(report: dict) -> list[str]:
    return [f"{row['scenario']}\nC={row['concurrency']} k={row['per_call']}" for row in report["rows"]]


def served_vs_in_process(report: dict):
    rows = report["rows"]
    figure, axes = plt.subplots(figsize=(10, 4.2))
    series = {"in-process fp32": [row["in_process_fp32"]["rate"] for row in rows],
              "in-process best": [row["in_process_best"]["rate"] for row in rows],
              "served, gRPC": [row["grpc"]["rate"] for row in rows],
              "served, REST (gateway)": [row["rest"]["rate"] for row in rows]}
    width = 0.8 / len(series)
    for offset, (label, values) in enumerate(series.items()):
        axes.bar([index + offset * width for index in range(len(rows))], values, width, label=label)
    axes.set_xticks([index + 0.4 - width / 2 for index in range(len(rows))], _loads(report), fontsize=7)
    axes.set_ylabel("items/s")
    axes.set_ylim(0, max(max(values) for values in series.values()) * 1.25)
    axes.set_title("Served throughput against the in-process ceilings")
    axes.legend(fontsize=7, ncol=len(series), loc="upper left")
    figure.subplots_adjust(bottom=0.22)
    return figure


def latency(report: dict):
    rows = report["rows"]
    figure, axes = plt.subplots(figsize=(10, 4.2))
    for path, marker in (("grpc", "o"), ("rest", "s")):
        for percentile, style in (("p50_ms", "-"), ("p99_ms", "--")):
            axes.plot(range(len(rows)), [row[path][percentile] for row in rows], style, marker=marker,
                      label=f"{'REST' if path == 'rest' else 'gRPC'} {percentile.removesuffix('_ms')}")
    axes.set_xticks(range(len(rows)), _loads(report), fontsize=7)
    axes.set_yscale("log")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title("Latency percentiles per load")
    axes.legend(fontsize=7)
    figure.subplots_adjust(bottom=0.22)
    return figure


def cache_gain(report: dict):
    loads = report.get("edge", {}).get("cache", {}).get("loads", [])
    if not loads:
        return None
    figure, axes = plt.subplots(figsize=(6, 4.2))
    for load in loads:
        axes.scatter(load["hit_share"] * 100, load["ratio"], s=60)
        axes.annotate(f"C={load['concurrency']} k={load['per_call']}", (load["hit_share"] * 100, load["ratio"]),
                      textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.axhline(1.0, color="#999", linewidth=0.8)
    axes.set_xlim(0, 100)
    axes.set_ylim(0, max(load["ratio"] for load in loads) * 1.3)
    axes.set_xlabel("inputs answered by the cache (%)")
    axes.set_ylabel("throughput with the cache / without")
    axes.set_title("Response cache: gain against hit ratio")
    figure.subplots_adjust(bottom=0.2)
    return figure


CHARTS = {"served": served_vs_in_process, "latency": latency, "cache": cache_gain}


def draw(report_path: Path, docs: bool = True) -> list[Path]:
    """The report's charts as PNG files next to it (and, with `docs`, into docs/charts/)."""
    report = json.loads(report_path.read_text())
    written = []
    for name, chart in CHARTS.items():
        figure = chart(report)
        if figure is None:
            continue
        _caption(figure, report)
        targets = [report_path.with_name(f"{report_path.stem}-{name}.png")]
        if docs:
            DOCS_CHARTS.mkdir(exist_ok=True)
            targets.append(DOCS_CHARTS / f"{name}.png")
        for target in targets:
            figure.savefig(target, dpi=110)
            written.append(target)
        plt.close(figure)
    return written


if __name__ == "__main__":
    for path in draw(Path(sys.argv[1]).resolve()):
        print(path.relative_to(ROOT))
