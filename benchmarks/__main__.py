"""``python -m benchmarks [--only a,b] [--output reports/bench.json]``: run the benchmarks, write the
JSON report and print a table. See BENCHMARKS.md for what each figure means.

Figures, in the order they run (processes each group needs are started and stopped around it):

- memory_per_message, iceberg_probe_cost, iceberg_rest_cost (its S3 and catalog server of its own),
  injection_websocket, watch_cost: no shared process;
- injection_kafka, measurement_resolution, kafka_probe_scan: one Kafka broker (compose/stack.toml's ``kafka``);
- time_to_verdict, observer_cost, pipeline_capacity: the whole local stack;
- trogdor_background: the cluster profile's brokers and Trogdor (benchmarks/trogdor.py).

Every figure is the median of 3 rounds with the lowest and highest shown; the machine's load while each was
taken is recorded beside it. The run rewrites BENCHMARKS.md's results section from its report
(``benchmarks/document.py``). Exit code 0 when every figure ran (goals met or not: the report says), 1 when
one raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import (
    capacity,
    document,
    iceberg_cost,
    injection,
    kafka_scan,
    memory,
    observer_cost,
    resolution,
    trogdor,
    verdict,
    watch,
)
from benchmarks.common import ROOT, BoxLoad, Figure, bootstrap_of, failed_figure, local_stack, machine

GOALS = {
    "memory_per_message": ("Memory per traced message", f"<= {memory.GOAL_BYTES} B per canary"),
    "iceberg_probe_cost": ("Iceberg probe cost vs history: SQL catalog", "stated: O(metadata file) per commit"),
    "iceberg_rest_cost": ("Iceberg probe cost vs history: REST catalog", f"<= x{iceberg_cost.REST_GOAL} to 10,000"),
    "injection_websocket": ("Injection capacity: WebSocket", f">= {injection.WS_GOAL_RATE:,} msg/s held"),
    "injection_kafka": ("Injection capacity: Kafka", f"ratio >= {injection.KAFKA_GOAL}"),
    "measurement_resolution": ("Measurement resolution: Kafka stage", f"p50 within {resolution.GOAL_MS:g} ms"),
    "kafka_probe_scan": ("Kafka probe scan rate", f"ratio >= {kafka_scan.GOAL}"),
    "time_to_verdict": ("Time to verdict", f"<= {verdict.GOAL_S:g} s after the settle window"),
    "observer_cost": ("Observer cost on the pipeline", f"<= {observer_cost.GOAL:.0%}"),
    "pipeline_capacity": ("Reference pipeline capacity", f">= {capacity.GOAL_RATE:,} msg/s"),
    "watch_cost": ("pipeline-check watch: memory and CPU", f"RSS <= +{watch.GROWTH_GOAL:g}%; < 5% of a core at 100/s"),
    "trogdor_background": ("Background load: Trogdor agents vs pipeline-check's generator", trogdor.GOAL),
}
GROUPS: list[tuple[str, list[str]]] = [
    ("none", ["memory_per_message", "iceberg_probe_cost", "iceberg_rest_cost", "injection_websocket", "watch_cost"]),
    ("kafka", ["injection_kafka", "measurement_resolution", "kafka_probe_scan"]),
    ("stack", ["time_to_verdict", "observer_cost", "pipeline_capacity"]),
    ("cluster", ["trogdor_background"]),
]


@contextlib.contextmanager
def _environment(kind: str) -> Iterator[Any]:
    """Nothing, a Kafka broker, or the whole local stack, stopped on the way out."""
    if kind == "none":
        yield None
    elif kind == "kafka":
        with local_stack(["kafka"]) as stack:
            yield stack
    elif kind == "cluster":
        with trogdor.cluster() as stack:
            yield stack
    else:
        with local_stack() as stack:
            yield stack


def _runner(name: str, env: Any) -> Callable[[], Figure]:
    runners: dict[str, Callable[[], Figure]] = {
        "memory_per_message": memory.run,
        "iceberg_probe_cost": iceberg_cost.run,
        "iceberg_rest_cost": iceberg_cost.run_rest,
        "kafka_probe_scan": lambda: kafka_scan.run(bootstrap_of(env)),
        "observer_cost": lambda: observer_cost.run(env),
        "injection_websocket": injection.websocket_capacity,
        "injection_kafka": lambda: injection.kafka_capacity(bootstrap_of(env)),
        "measurement_resolution": lambda: resolution.run(bootstrap_of(env)),
        "time_to_verdict": lambda: verdict.run(dict(env.spec.exports)),
        "pipeline_capacity": lambda: capacity.run(env),
        "watch_cost": watch.run,
        "trogdor_background": lambda: trogdor.run(env),
    }
    return runners[name]


def run(names: list[str], console: Console) -> tuple[dict[str, Figure], bool]:
    """Run the named figures group by group; (figures, whether every one ran without raising)."""
    figures: dict[str, Figure] = {}
    ok = True
    for kind, members in GROUPS:
        wanted = [n for n in members if n in names]
        if not wanted:
            continue
        try:
            with _environment(kind) as env:
                for name in wanted:
                    console.print(f"[bold]{GOALS[name][0]}[/] ...")
                    began, box = time.monotonic(), BoxLoad()
                    try:
                        figure = _runner(name, env)()
                    except Exception as exc:
                        ok = False
                        console.print_exception(max_frames=5)
                        figure = failed_figure(name, *GOALS[name], exc)
                    figure.seconds = time.monotonic() - began
                    figure.load = box.stop()
                    figure.taken_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                    figures[name] = figure
                    mark = "[green]met[/]" if figure.met else "[red]not met[/]"
                    console.print(f"  {figure.headline} ({mark}, {figure.seconds:.0f} s)")
        except Exception as exc:  # the environment itself did not start
            ok = False
            console.print_exception(max_frames=5)
            for name in wanted:
                figures.setdefault(name, failed_figure(name, *GOALS[name], exc))
    return figures, ok


def table(figures: dict[str, Figure]) -> Table:
    out = Table(title="pipeline-check benchmarks", show_lines=True)
    out.add_column("figure", style="bold")
    out.add_column("result")
    out.add_column("goal")
    out.add_column("met", justify="center")
    for figure in figures.values():
        out.add_row(figure.title, figure.headline, figure.goal, "[green]yes[/]" if figure.met else "[red]no[/]")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated figures (default: all): {', '.join(GOALS)}")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument(
        "--no-document", action="store_true", help="leave BENCHMARKS.md and benchmarks/results.json as they are"
    )
    args = parser.parse_args(argv)
    names = list(GOALS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in GOALS]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; known: {', '.join(GOALS)}")
    # the stack's health checks dial ports before they listen: aiokafka logs every refused connection
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    console = Console(width=None if sys.stdout.isatty() else 140)
    began = time.monotonic()
    info = machine()
    console.print(
        f"machine: {info['nproc']} cores, {info['ram_gib']} GiB, {info['cpu_model']}; Python {info['python']}; "
        f"{info['java']}; Kafka {info['kafka']}"
    )
    figures, ok = run(names, console)
    report: dict[str, Any] = {"schema_version": 1, "machine": info, "figures": {}}
    if args.only and args.output.exists():  # a partial run updates the figures it ran
        report["figures"] = json.loads(args.output.read_text()).get("figures", {})
    report["figures"].update({name: f.to_json() for name, f in figures.items()})
    report["taken_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["seconds"] = round(time.monotonic() - began, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_document:
        document.publish(report)
    console.print(table(figures))
    console.print(f"wrote {args.output} in {report['seconds']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
