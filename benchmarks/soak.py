"""``python -m benchmarks.soak [--runs 50] [--output reports/soak.json]`` (``make soak``): consecutive
validations of the reference pipeline, half on the default stack (compose/pipeline.toml: smoke, freshness
and its fault scenarios), half on the cluster profile (compose/pipeline.cluster.toml: smoke, Trogdor
background load and the faults on brokers), each scenario in turn. Every one should pass: each verdict and
duration is recorded, and each run that did not pass is reported with its cause (the checks that failed and
what they saw, the stage the late or lost canaries stopped at, the slowest hop, the run's last notes).

A run that did not pass where no fault touched the consumer, with canaries stopped before the consumer, or
late (a loss or latency check failed) with the consumer the slowest hop, is marked ``consumer_stall`` (the
stall seen under CPU contention).

Runs in this process against stacks it starts on free ports in a temp folder (the faults act through the
same stack driver); both stacks are stopped on the way out, whatever ends the soak.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import COMPOSE, ROOT, free_ports, machine
from pipeline_check.config import load_config
from pipeline_check.core.asyncutil import run_sync
from pipeline_check.reporting.json import JsonReporter
from pipeline_check.runs.driver import run_async


def scenarios(config: Path) -> tuple[str, ...]:
    """smoke and freshness, then every injected scenario ``config`` ships (its faults among them)."""
    shipped = load_config(config, {}).scenarios
    return ("smoke", "freshness", *(n for n, s in shipped.items() if s.mode == "active" and n != "freshness"))


PLAIN = scenarios(COMPOSE / "pipeline.toml")
CLUSTER = scenarios(COMPOSE / "pipeline.cluster.toml")
STACKS = {
    "plain": (None, COMPOSE / "pipeline.toml", PLAIN),
    "cluster": ("cluster", COMPOSE / "pipeline.cluster.toml", CLUSTER),
}
NOTES_KEPT = 8


def plan(runs: int) -> list[tuple[str, str]]:
    """``runs`` (stack, scenario) pairs: half on each stack (the plain one first), its scenarios in turn."""
    plain = runs // 2
    return [("plain", PLAIN[i % len(PLAIN)]) for i in range(plain)] + [
        ("cluster", CLUSTER[i % len(CLUSTER)]) for i in range(runs - plain)
    ]


@contextmanager
def stack(profile: str | None) -> Iterator[Any]:
    """The default stack or a profile, on free ports in a temp folder; stopped on the way out."""
    from pipeline_check.stack import LocalStack, load_stack
    from pipeline_check.stack.spec import profile_file

    file = COMPOSE / "stack.toml" if profile is None else profile_file(profile, COMPOSE / "stack.toml")
    with tempfile.TemporaryDirectory(prefix=f"pc-soak-{profile or 'plain'}-") as tmp:
        declared = load_stack(file)
        local = LocalStack(load_stack(file, run_dir=Path(tmp), ports=free_ports(list(declared.ports))))
        try:
            local.up()
            yield local
        finally:
            local.down()


def cause(report: dict[str, Any], faults: list[str]) -> dict[str, Any]:
    """Why a run did not pass, from its JSON report; ``faults`` the services and links its faults touched."""
    if report.get("verdict") == "aborted":
        return {"error": report.get("error"), "consumer_stall": False}
    unpassed = [c for c in report.get("checks", []) if c["status"] != "passed"]
    failed = [
        {"check": c["name"], "status": c["status"], "observed": c.get("observed"), "detail": c.get("detail", "")}
        for c in unpassed
    ]
    hops = {s["name"]: s["latency"].get("p99", 0) for s in report.get("stages", [])}
    finite = {k: v for k, v in hops.items() if isinstance(v, int | float) and math.isfinite(v)}
    slowest = max(finite, key=lambda k: finite[k]) if finite else None
    stuck = {stage: len(tags) for stage, tags in report.get("lost", {}).get("stuck", {}).items()}
    # "kafka" as the last stage reached: the canaries stopped before the consumer committed them; or canaries
    # late (a latency or loss check failed) with the consumer the slowest hop. A consumer slowest in a run that
    # failed on something else (a background rate short of the asked) is no stall.
    late = any(c.get("kind") == "latency" or c["name"].startswith("lost") for c in unpassed)
    consumer = "kafka" in stuck or (late and slowest == "consumer")
    touched = any("consumer" in f for f in faults)
    return {
        "failed": failed,
        "slowest_hop": slowest,
        "hop_p99_s": {k: round(v, 3) for k, v in finite.items()},
        "stuck": stuck,
        "notes": report.get("notes", [])[-NOTES_KEPT:],
        "consumer_stall": consumer and not touched,
    }


def one_run(local: Any, config_file: Path, scenario: str, folder: Path, index: int) -> dict[str, Any]:
    """One validation: verdict, exit code, duration, and the cause when it did not pass."""
    local.up()  # whole again, whatever the run before left
    config = load_config(config_file, {**os.environ, **local.spec.exports})
    report_path = folder / f"run-{index:02d}.json"
    began = time.monotonic()
    try:
        outcome = run_sync(run_async(config, scenario, [JsonReporter(report_path)], stack=local))
        verdict, code = outcome.finished.verdict.label, int(outcome.exit_code)
    except Exception as exc:  # an aborted run: its report says why
        verdict, code = "aborted", getattr(exc, "exit_code", 3)
    seconds = time.monotonic() - began
    report = json.loads(report_path.read_text()) if report_path.exists() else {"verdict": "aborted"}
    faults = [t for f in report.get("faults", []) for t in (f["target"], *f.get("services", []))]
    entry: dict[str, Any] = {
        "run": index,
        "scenario": scenario,
        "verdict": verdict,
        "exit_code": int(code),
        "seconds": round(seconds, 1),
        "run_id": report.get("run", {}).get("run_id"),
    }
    if verdict != "passed":
        entry["cause"] = cause(report, faults)
    return entry


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """How many runs did not pass, and per scenario how often and why."""
    wrong = [e for e in entries if e["verdict"] != "passed"]
    flaky: dict[str, dict[str, Any]] = {}
    for e in wrong:
        key = f"{e['stack']}:{e['scenario']}"
        item = flaky.setdefault(key, {"runs": 0, "of": 0, "causes": []})
        item["runs"] += 1
        c = e["cause"]
        what = c.get("error") or "; ".join(f"{f['check']} {f['status']} ({f['observed']})" for f in c["failed"])
        item["causes"].append(f"run {e['run']}: {what}" + (" [consumer stall?]" if c.get("consumer_stall") else ""))
    for key in flaky:
        stack_name, scenario = key.split(":", 1)
        flaky[key]["of"] = sum(1 for e in entries if e["stack"] == stack_name and e["scenario"] == scenario)
    return {
        "runs": len(entries),
        "wrong": len(wrong),
        "verdicts": dict(Counter(e["verdict"] for e in entries)),
        "consumer_stalls": sum(1 for e in wrong if e["cause"].get("consumer_stall")),
        "flaky": flaky,
        "seconds_per_scenario": {
            f"{s}:{n}": round(sum(e["seconds"] for e in entries if (e["stack"], e["scenario"]) == (s, n)) / k, 1)
            for (s, n), k in Counter((e["stack"], e["scenario"]) for e in entries).items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "soak.json")
    args = parser.parse_args(argv)
    # stacks starting and faults on brokers refuse connections: aiokafka logs each at ERROR; runs report outcomes
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    console = Console(width=None if sys.stdout.isatty() else 140)
    began = time.monotonic()
    entries: list[dict[str, Any]] = []
    todo = plan(args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def write() -> dict[str, Any]:
        doc = {"machine": machine(), "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": entries}
        doc |= {"summary": summarise(entries), "seconds": round(time.monotonic() - began, 1)}
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
        return doc

    with tempfile.TemporaryDirectory(prefix="pc-soak-reports-") as reports:
        for name, (profile, config_file, _) in STACKS.items():
            mine = [(i, s) for i, (st, s) in enumerate(todo) if st == name]
            if not mine:
                continue
            with stack(profile) as local:
                for index, scenario in mine:
                    entry = {"stack": name, **one_run(local, config_file, scenario, Path(reports), index)}
                    entries.append(entry)
                    mark = "ok" if entry["verdict"] == "passed" else f"[red]{entry['verdict']}[/]"
                    console.print(f"{index + 1:>2}/{len(todo)} {name}:{scenario} {mark} in {entry['seconds']:.0f} s")
                    write()  # each run kept, should the soak be stopped
    doc = write()
    summary = doc["summary"]
    table = Table(title=f"soak: {summary['wrong']} of {summary['runs']} did not pass")
    for column in ("scenario", "did not pass", "causes"):
        table.add_column(column)
    for key, item in summary["flaky"].items():
        table.add_row(key, f"{item['runs']} of {item['of']}", "\n".join(item["causes"]))
    console.print(table)
    console.print(f"wrote {args.output} in {doc['seconds'] / 60:.0f} min")
    return 0 if summary["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
