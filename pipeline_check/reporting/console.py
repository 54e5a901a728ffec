"""Console reporter: progress while a run goes on, then per-stage figures, the checks and the verdict.

In a terminal (and with ``live=True``) a rich progress display shows one line for the injection and
one per stage, with :class:`~pipeline_check.verdict.events.Note` messages printed above it. Anywhere else (CI
logs, pipes, ``live=False``) a plain progress line is printed at most every ``interval`` seconds, so a
log stays readable and bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline_check.canary.tags import label
from pipeline_check.trace.stages import SOURCE
from pipeline_check.verdict.events import (
    CheckFinished,
    Event,
    Injected,
    Note,
    Observed,
    RunAborted,
    RunFinished,
    RunStarted,
)
from pipeline_check.verdict.figures import PassiveFigures, ResponseFigures
from pipeline_check.verdict.measurements import listed
from pipeline_check.verdict.results import format_value
from pipeline_check.verdict.status import Status
from pipeline_check.verdict.summary import RunSummary
from pipeline_check.verdict.thresholds import PASSIVE_FAMILIES

SHOWN = 5  # tags and field diffs listed per line before "…"
STATS = ("p50", "p95", "p99", "max")
STATUS_STYLE = {
    Status.PASSED: "bold green",
    Status.NOT_APPLICABLE: "dim",
    Status.INCONCLUSIVE: "bold yellow",
    Status.FAILED: "bold red",
}
_INJECTION = "injection"


def _latency(stats: Mapping[str, float], key: str) -> str:
    value = stats.get(key)
    return "-" if value is None else format_value(value, "latency")


def _unmeasured(stats: Mapping[str, float]) -> str:
    unmeasured = int(stats.get("unmeasured", 0))
    return f" ({unmeasured} unmeasured)" if unmeasured else ""


def _canaries(n: int) -> str:
    return f"{n} canary" if n == 1 else f"{n} canaries"


def _first(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + ("…" if len(items) > SHOWN else "")


class ConsoleReporter:
    """Writes a run's progress and its final report to ``console``."""

    def __init__(
        self,
        console: Console,
        *,
        live: bool = True,
        interval: float = 2.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.live = live and console.is_terminal
        self.interval = interval
        self._now = now
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._injected: Injected | None = None
        self._observed: dict[str, Observed] = {}
        self._stages: tuple[str, ...] = ()
        self._last_plain = -math.inf

    # -- events ----------------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, Injected):
            self._injected = event
            self._progressed()
        elif isinstance(event, Observed):
            self._observed[event.stage] = event
            self._progressed()
        elif isinstance(event, Note):
            self._print(Text(f"• {event.message}", style="dim"))
        elif isinstance(event, CheckFinished):
            pass  # the checks table comes with RunFinished
        elif isinstance(event, RunFinished):
            self._stop()
            self._report(event)
        elif isinstance(event, RunAborted):
            self._stop()  # the error itself is the caller's to print

    def close(self) -> None:
        self._stop()

    # -- progress --------------------------------------------------------------------------------------

    def _run_started(self, run: RunStarted) -> None:
        self._stages = run.stages
        if run.mode == "passive":  # no progress bars: nothing is injected, notes tell the progress
            scenario = f" scenario {run.scenario}," if run.scenario else ""
            what = (
                f"sampling {', '.join(run.stages)} for {run.window_s:g}s (injects nothing)"
                if run.stages
                else "checking the contract (injects nothing)"
            )
            self.console.print(Text.assemble(("pipeline-check ", "bold"), f"{run.run_id}:{scenario} passive, {what}"))
            return
        background = f" (+{run.background_rate:g}/s background)" if run.background_rate else ""
        scenario = f" scenario {run.scenario}," if run.scenario else ""
        self.console.print(
            Text.assemble(
                ("pipeline-check ", "bold"),
                f"{run.run_id}:{scenario} {_canaries(run.count)} at {run.rate:g}/s{background} ",
                f"from {run.source} through {' → '.join(run.stages)}",
            )
        )
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._tasks[_INJECTION] = self._progress.add_task("injected", total=run.count, extra="")
        for stage in run.stages:
            self._tasks[stage] = self._progress.add_task(stage, total=0, extra="")
        self._progress.start()

    def _progressed(self) -> None:
        if self._progress is not None:
            self._update_live(self._progress)
        elif (now := self._now()) - self._last_plain >= self.interval:
            self._last_plain = now
            self.console.print(self._plain_line(), highlight=False)

    def _update_live(self, progress: Progress) -> None:
        if self._injected is not None:
            inj = self._injected
            progress.update(
                self._tasks[_INJECTION], completed=inj.sent, total=inj.total, extra=f"{inj.achieved_rate:.1f}/s"
            )
        for stage, obs in self._observed.items():
            if stage not in self._tasks:
                self._tasks[stage] = progress.add_task(stage, total=0, extra="")
            progress.update(self._tasks[stage], completed=obs.reached, total=obs.injected)

    def _plain_line(self) -> str:
        parts = []
        if self._injected is not None:
            inj = self._injected
            parts.append(f"injected {inj.sent}/{inj.total} at {inj.achieved_rate:.1f}/s")
        order = [*self._stages, *(s for s in self._observed if s not in self._stages)]
        parts += [f"{s} {self._observed[s].reached}/{self._observed[s].injected}" for s in order if s in self._observed]
        return " | ".join(parts)

    def _print(self, renderable: Text) -> None:
        # Progress shares the console: printing through it lands above the live display.
        (self._progress.console if self._progress is not None else self.console).print(renderable)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- final report ----------------------------------------------------------------------------------

    def _report(self, done: RunFinished) -> None:
        summary = done.summary
        if summary is not None:
            self.console.print(self._stage_table(summary))
        if done.passive is not None:
            self._passive(done.passive)
        self.console.print(self._checks_table(done))
        if summary is not None:
            self._faults(summary)
            self._coverage(summary)
            self._problems(summary)
            self._injection(done, summary)
        if done.responses is not None:
            self._responses(done.responses)
        self._verdict(done)

    def _passive(self, passive: PassiveFigures) -> None:
        table = Table(
            title=f"stages, sampled every {format_value(passive.interval_s, 'latency')} for {passive.window_s:g}s",
            caption="freshness: now minus the newest record's time; lag: now minus the oldest record not committed",
            title_justify="left",
        )
        for name in ("stage", "state", "series", *STATS, "at the end", "samples", "detail"):
            table.add_column(name, justify="right" if name in (*STATS, "at the end", "samples") else "left")
        for stage in passive.stages:
            style = {"active": "green", "stale": "bold red", "idle": "yellow"}.get(stage.state, "")
            for family, stats in stage.series.items():
                kind = PASSIVE_FAMILIES.get(family, "latency")
                table.add_row(
                    stage.stage,
                    Text(stage.state, style=style),
                    f"{family}.{stage.stage}",
                    *(("-" if p not in stats else format_value(stats[p], kind)) for p in STATS),
                    format_value(stage.last[family], kind) if family in stage.last else "-",
                    f"{stage.samples}" + (f" ({stage.failed} failed)" if stage.failed else ""),
                    Text(stage.detail),
                )
        self.console.print(table)
        for skew in passive.skew:
            self.console.print(Text(skew, style="bold yellow"))
        self.console.print(Text(passive.basis, style="dim"))

    def _responses(self, r: ResponseFigures) -> None:
        stats = ", ".join(f"{p} {_latency(r.requests, p)}" for p in STATS if p in r.requests)
        count = int(r.requests.get("n", 0))
        self.console.print(Text(f"API response times: {stats or '-'} ({count} requests, {r.failed} failed)"))
        if r.concurrency:
            ratio = "-" if r.degradation is None else f"x{r.degradation:.2f}"
            fresh = "; ".join(f"{name} p95 {_latency(st, 'p95')}" for name, st in r.freshness_under_load.items())
            self.console.print(
                Text(
                    f"API under {r.concurrency} concurrent queries: p95 idle {_latency(r.idle, 'p95')}, "
                    f"loaded {_latency(r.loaded, 'p95')} ({ratio}; {int(r.loaded.get('n', 0))} queries, "
                    f"{r.loaded_failed} failed); freshness under that load: {fresh or '-'}"
                )
            )

    def _stage_table(self, summary: RunSummary) -> Table:
        table = Table(
            title="stages",
            caption="latencies count undelivered canaries as never arriving; ± how often the probes looked",
            title_justify="left",
        )
        table.add_column("stage")
        table.add_column("reached", justify="right")
        table.add_column("copies (extra)", justify="right")
        table.add_column("retracted", justify="right")
        for stat in STATS:
            table.add_column(stat, justify="right")
        table.add_column("±", justify="right")
        table.add_column("measured")
        table.add_column("since injection p99", justify="right")
        for stage in summary.stages:
            table.add_row(
                stage.name,
                f"{stage.reached}/{summary.injected}",
                str(stage.extra_copies),
                str(stage.retracted),
                *(_latency(stage.latency, s) for s in STATS),
                format_value(stage.resolution_s, "latency"),
                f"from {stage.upstream}" + _unmeasured(stage.latency),
                _latency(stage.since_injection, "p99"),
            )
        table.add_row(
            Text(f"e2e ({summary.final})", style="bold"),
            f"{summary.delivered}/{summary.injected}",
            "",
            "",
            *(_latency(summary.e2e, s) for s in STATS),
            format_value(summary.e2e_resolution_s, "latency"),
            "since injection" + _unmeasured(summary.e2e),
            _latency(summary.e2e, "p99"),
            end_section=True,
        )
        return table

    def _checks_table(self, done: RunFinished) -> Table:
        table = Table(title="checks", title_justify="left")
        for name in ("status", "threshold", "observed", "samples", "detail"):
            table.add_column(name, justify="right" if name == "samples" else "left")
        for r in done.results:
            table.add_row(
                Text(r.status.label, style=STATUS_STYLE[r.status]),
                Text(r.threshold),
                Text(r.observed_text),
                str(r.samples),
                Text(r.detail),
            )
        return table

    def _faults(self, summary: RunSummary) -> None:
        for f in summary.faults:
            end = f"{f.end_s:.1f}s" if math.isfinite(f.end_s) else "the end (never undone)"
            acted = f" ({', '.join(f.services)})" if f.services and f.services != (f.target,) else ""
            self.console.print(Text(f"fault {f.label}{acted}: from {f.start_s:.1f}s to {end}", style="yellow"))
            for moment, states in f.partitions.items():
                leaders = ", ".join(
                    f"{key} {f.brokers.get(s.leader, s.leader)}"
                    + (f" (isr {','.join(map(str, s.isr))})" if set(s.isr) != set(s.replicas) else "")
                    for key, s in states.items()
                )
                self.console.print(Text(f"  leaders {moment}: {leaders or 'unknown'}", style="dim"))
            if f.output.strip():
                self.console.print(Text(f.output.rstrip(), style="dim"))
        for window, stats in summary.windows.items():
            if stats:
                self.console.print(
                    Text(f"  e2e {window} the faults: p50 {_latency(stats, 'p50')}, p99 {_latency(stats, 'p99')}")
                )

    def _coverage(self, summary: RunSummary) -> None:
        """One line at any partition count: the seen/delivered figures per partition are in the JSON and HTML."""
        parts = []
        for stage in summary.stages:
            if stage.shards:
                empty = [c.shard for c in stage.shards if not c.seen]
                part = f"{stage.name} {len(stage.shards) - len(empty)}/{len(stage.shards)} partitions"
                parts.append(part + (f" (none in {listed([f'p{p}' for p in empty])})" if empty else ""))
        if parts:
            where = "(seen/delivered per partition in the JSON/HTML report)"
            self.console.print(Text(f"coverage: {', '.join(parts)} {where}"))

    def _problems(self, summary: RunSummary) -> None:
        if summary.lost:
            self.console.print(Text(f"{summary.lost} of {_canaries(summary.injected)} lost", style="bold red"))
            order = {name: i for i, name in enumerate((SOURCE, *(s.name for s in summary.stages)))}
            for stage, tags in sorted(summary.stuck.items(), key=lambda kv: order.get(kv[0], len(order))):
                self.console.print(Text(f"  {len(tags)} stuck after {stage}: {_first(tags)}"))
        if summary.corrupted:
            lines = [f"{label(d.tag)} at {d.stage}: {d.text}" for d in summary.diffs]
            self._listed(f"{_canaries(summary.corrupted)} corrupted", lines, "field differences")
        if summary.retractions:
            lines = [f"{label(r.tag)} at {r.stage}: {r.text}" for r in summary.retractions]
            self._listed(f"{_canaries(summary.retracted)} retracted", lines, "retractions")
        counts = [
            f"{name} {value}"
            for name, value in (
                ("duplicated canaries", summary.duplicates),
                ("out of order", summary.out_of_order),
                ("unexpected tags", summary.unexpected),
            )
            if value
        ]
        if counts:
            self.console.print(Text("; ".join(counts), style="yellow"))

    def _listed(self, title: str, lines: list[str], what: str) -> None:
        self.console.print(Text(title, style="bold red"))
        for line in lines[:SHOWN]:
            self.console.print(Text(f"  {line}"))
        if len(lines) > SHOWN:
            self.console.print(Text(f"  … {len(lines) - SHOWN} more {what}"))

    def _injection(self, done: RunFinished, s: RunSummary) -> None:
        inj = s.injection
        background = f" + {inj.background} background" if inj.background else ""
        self.console.print(
            Text(
                f"injection: {_canaries(inj.sent)}{background}; offered {inj.offered_rate:.1f}/s, "
                f"achieved {inj.achieved_rate:.1f}/s; lateness p99 {format_value(inj.lateness_p99, 'latency')}; "
                f"{inj.pauses} pauses; delivered {format_value(s.throughput.delivered, 'rate')}; "
                f"settled {s.settle_s:.1f}s after the last delivery"
            )
        )
        load = inj.background_load
        if load is not None:
            achieved = "unknown" if load.achieved_rate is None else f"{load.achieved_rate:,.0f}/s"
            sent = f"{load.sent:,} in {load.seconds:.1f}s" if load.sent is not None else "count unknown"
            agents = "; " + ", ".join(
                f"{a.agent} {a.sent if a.sent is not None else '?'}{f' ({a.error})' if a.error else ''}"
                for a in load.agents
            )
            self.console.print(
                Text(
                    f"background ({load.engine}): {achieved} achieved of {load.asked_rate:,.0f}/s asked "
                    f"({sent}{agents if load.agents else ''})",
                    style="bold yellow" if load.short else "",
                )
            )
            if load.short:
                self.console.print(Text(load.short, style="bold yellow"))
        if done.resolution:
            resolution = ", ".join(f"{s} {format_value(v, 'latency')}" for s, v in done.resolution.items())
            self.console.print(Text(f"probe resolution: {resolution}"))
        if done.probe_load:
            asked = "; ".join(f"{stage} {figures.text()}" for stage, figures in done.probe_load.items())
            self.console.print(Text(f"probe load: {asked}"))

    def _verdict(self, done: RunFinished) -> None:
        took = f" in {done.duration:.1f}s (exit {int(done.exit_code)})"
        counts = ", ".join(
            f"{sum(r.status == status for r in done.results)} {status.label}"
            for status in Status
            if any(r.status == status for r in done.results)
        )
        self.console.print(Text(f"{done.verdict.label.upper()}: {counts}{took}", style=STATUS_STYLE[done.verdict]))
