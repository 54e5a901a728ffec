"""The ``pipeline-check`` command: parse, call the library, map the outcome to an exit code.

Exit codes: 0 passed, 1 a check failed (or was inconclusive, unless allowed), 2 bad usage, settings or an
unreachable endpoint, 3 an internal error, 130 interrupted. Every error is one line on stderr; an
internal error's traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline_check.errors import ConfigError, ExitCode, PipelineCheckError, ServiceStartError, one_line
from pipeline_check.redact import mask_text

err = Console(stderr=True, highlight=False)
# CI logs are not terminals: give tables room rather than the 80 columns rich assumes
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _ports(values: tuple[str, ...]) -> dict[str, int]:
    ports = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not number.isdigit() or not 0 < int(number) < 65536:
            raise click.BadParameter(f"{value!r}: expected NAME=PORT, e.g. api=8001", param_hint="--port")
        ports[name] = int(number)
    return ports


stack_file_option = click.option(
    "--stack-file", type=click.Path(path_type=Path), default=None,
    help="stack description [default: $PIPELINE_CHECK_STACK_FILE or compose/stack.toml]",
)  # fmt: skip
profile_option = click.option(
    "--profile", default=None, envvar="PIPELINE_CHECK_STACK_PROFILE", metavar="NAME",
    help="a profile of the stack: profiles/NAME.toml beside the stack file, e.g. lakehouse",
)  # fmt: skip
run_dir_option = click.option(
    "--run-dir", type=click.Path(path_type=Path), default=None,
    help="state, logs and data of the stack [default: as stack.toml says]",
)  # fmt: skip
config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="pipeline.toml [default: $PIPELINE_CHECK_CONFIG, ./pipeline.toml, ./compose/pipeline.toml]",
)  # fmt: skip
json_option = click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="write the JSON report here"
)
junit_option = click.option(
    "--junit", "junit_path", type=click.Path(path_type=Path), default=None, help="write JUnit XML here"
)


def _stack_file(stack_file: Path | None, profile: str | None) -> Path | None:
    """The stack file ``--profile`` names (beside ``--stack-file``), else ``--stack-file`` itself."""
    if profile is None:
        return stack_file
    from pipeline_check.stack.spec import profile_file

    return profile_file(profile, stack_file)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipeline-check")
@click.option("--debug", is_flag=True, help="show the traceback of an internal error")
def cli(debug: bool) -> None:
    """Prove a streaming data pipeline works end to end."""


@cli.group()
def stack() -> None:
    """Run the local reference stack (Kafka, consumer, ingestor, query API) as processes."""


@stack.command("up")
@stack_file_option
@profile_option
@run_dir_option
@click.option("--port", "ports", multiple=True, metavar="NAME=PORT", help="override a port of stack.toml")
@click.option("--with", "with_optional", multiple=True, metavar="SERVICE", help="also start an optional service")
def stack_up(
    stack_file: Path | None,
    profile: str | None,
    run_dir: Path | None,
    ports: tuple[str, ...],
    with_optional: tuple[str, ...],
) -> None:
    """Start every service in dependency order, each healthy before the next."""
    from pipeline_check.stack import LocalStack

    local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir, ports=_ports(ports))
    reports = local.up(with_optional)
    for report in reports:
        out.print(f"[green]✓[/] {report.name:<10} healthy in {report.seconds:5.1f}s")
    total = sum(r.seconds for r in reports)
    out.print(f"stack {local.spec.name!r} up in {total:.1f}s (run dir {local.spec.run_dir})")


@stack.command("down")
@stack_file_option
@profile_option
@run_dir_option
def stack_down(stack_file: Path | None, profile: str | None, run_dir: Path | None) -> None:
    """Stop every service, dependents first."""
    from pipeline_check.stack import LocalStack

    local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir, follow=profile is None)
    local.down()
    out.print(f"stack {local.spec.name!r} down ({local.spec.label}, run dir {local.spec.run_dir})")


@stack.command("status")
@stack_file_option
@profile_option
@run_dir_option
def stack_status(stack_file: Path | None, profile: str | None, run_dir: Path | None) -> None:
    """State, health, pid, uptime and restarts of each service; exit 1 unless each one runs and is healthy
    (an optional service nobody started aside)."""
    from pipeline_check.stack import LocalStack

    local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir, follow=profile is None)
    title = f"{local.spec.name} ({local.spec.label}, run dir {local.spec.run_dir})"
    table = Table("service", "state", "health", "pid", "uptime", "restarts", "port(s)", title=escape(title))
    statuses = local.status()
    for s in statuses:
        health = "-" if s.healthy is None else ("[green]healthy[/]" if s.healthy else "[red]unhealthy[/]")
        ports = ", ".join(str(p) for p in local.spec.ports_of(s.name).values())
        table.add_row(
            s.name + (" (optional)" if s.optional else ""),
            s.state,
            health,
            str(s.pid or "-"),
            "-" if s.uptime_s is None else f"{s.uptime_s:.0f}s",
            str(s.restarts),
            ports,
        )
    out.print(table)
    problems = [s.problem for s in statuses if not s.ok]
    if problems:
        err.print(escape(f"not running and healthy: {', '.join(problems)}"), soft_wrap=True)
        raise SystemExit(ExitCode.VERDICT_FAILED)


def _service_command(name: str, doc: str) -> None:
    @stack.command(name, help=doc)
    @click.argument("service")
    @stack_file_option
    @profile_option
    @run_dir_option
    def command(service: str, stack_file: Path | None, profile: str | None, run_dir: Path | None) -> None:
        from pipeline_check.stack import LocalStack

        local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir, follow=profile is None)
        report = getattr(local, name)(service)
        seconds = f" (healthy in {report.seconds:.1f}s)" if report is not None else ""
        out.print(f"{service}: {name} done{seconds}")


for _name, _doc in {
    "start": "Start one service and wait until it is healthy.",
    "stop": "Stop one service (SIGTERM, then SIGKILL after a grace period).",
    "kill": "Kill one service with SIGKILL (a crash: no shutdown hooks run).",
    "restart": "Stop and start one service.",
}.items():
    _service_command(_name, _doc)


@stack.command("logs")
@click.argument("service")
@click.option(
    "-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True, help="how many lines from the end"
)
@stack_file_option
@profile_option
@run_dir_option
def stack_logs(service: str, lines: int, stack_file: Path | None, profile: str | None, run_dir: Path | None) -> None:
    """Print the end of one service's log."""
    from pipeline_check.stack import LocalStack

    local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir, follow=profile is None)
    click.echo(local.logs(service, lines))


@cli.command()
@config_option
@click.option("-s", "--scenario", default=None, help="smoke | freshness | throughput | one defined in the config")
@json_option
@junit_option
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="write the HTML report here")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR", help="an extra SLA, e.g. 'e2e.p99 < 5s'")
@click.option("--count", type=click.IntRange(min=1), default=None, help="canaries to inject (overrides the scenario)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="canaries per second")
@click.option("--start-stack", is_flag=True, help="bring the local stack up first and down after")
@click.option(
    "--passive",
    is_flag=True,
    help="inject nothing: sample each stage's freshness from its own data for [passive] window "
    '(a scenario with mode = "passive" runs so without it)',
)
@click.option(
    "--allow-inconclusive",
    is_flag=True,
    help="exit 0 when no check failed though some were inconclusive (observed too little); reports still say so",
)
@stack_file_option
@profile_option
@run_dir_option
def validate(
    config_path: Path | None,
    scenario: str | None,
    json_path: Path | None,
    junit_path: Path | None,
    html_path: Path | None,
    thresholds: tuple[str, ...],
    count: int | None,
    rate: float | None,
    start_stack: bool,
    passive: bool,
    allow_inconclusive: bool,
    stack_file: Path | None,
    profile: str | None,
    run_dir: Path | None,
) -> None:
    """Inject tagged canaries, follow them through every stage, judge the SLAs (with --passive, or a
    passive scenario: inject nothing and judge the freshness the pipeline's own data shows).

    Exit 0 when every check passes, 1 when one fails or is inconclusive, 2 for bad settings or
    unreachable endpoints, 130 when interrupted.
    """
    from pipeline_check.config import find_config, load_config
    from pipeline_check.engine import run
    from pipeline_check.reporting import build_handlers

    path = find_config(config_path)
    env = dict(os.environ)
    local = None
    if start_stack:
        from pipeline_check.stack import LocalStack

        local = LocalStack.open(_stack_file(stack_file, profile), run_dir=run_dir)
        env.update(local.spec.exports)
    # every setting and report path is checked before the stack starts or anything is injected
    loaded = load_config(path, env)
    passive = loaded.is_passive(scenario, passive)
    if passive and (count is not None or rate is not None):
        raise click.UsageError("--count and --rate set what is injected, and a passive run injects nothing")
    config = loaded.with_overrides(scenario, thresholds=thresholds, passive=passive, count=count, rate=rate)
    handlers = build_handlers(
        out,
        json_path or config.report.json_path,
        junit_path or config.report.junit,
        live=out.is_terminal,
        html_path=html_path or config.report.html,
    )
    started: list[str] = []
    try:
        if local is not None:
            for report in local.up():
                started.append(report.name)
                out.print(f"[green]✓[/] {report.name:<10} healthy in {report.seconds:5.1f}s")
        outcome = run(config, scenario, handlers, passive=passive, allow_inconclusive=allow_inconclusive, stack=local)
    finally:
        if local is not None and started:  # a stack that was already up is left as it was
            local.down(started)
            out.print(f"stopped what --start-stack started: {', '.join(started)}")
    raise SystemExit(int(outcome.exit_code))


@cli.command()
@config_option
@click.option("--snapshot", is_flag=True, help="print the stages' current schemas as a starting [contract] (TOML)")
@json_option
@junit_option
def contract(config_path: Path | None, snapshot: bool, json_path: Path | None, junit_path: Path | None) -> None:
    """Check [contract]: Iceberg columns, Kafka and API record fields, API status codes.

    Exit 0 when the stages hold it, 1 on a difference (each one listed) or when a part had nothing to
    check, 2 for bad settings or unreachable endpoints. With --snapshot, print what the stages hold now.
    """
    import asyncio
    import time

    from pipeline_check.config import find_config, load_config
    from pipeline_check.errors import ConfigError
    from pipeline_check.reporting import build_handlers

    path = find_config(config_path)
    config = load_config(path)
    if snapshot:
        from pipeline_check.contract.snapshot import snapshot as take
        from pipeline_check.contract.snapshot import to_toml

        click.echo(to_toml(asyncio.run(take(config, int(time.time() * 1000))), path.name), nl=False)
        return
    from pipeline_check.engine import drive
    from pipeline_check.passive.run import contract_run

    if not config.contract:
        raise ConfigError(
            f"{path.name}: contract", None, "there is no [contract] section",
            f"declare one; `pipeline-check contract --snapshot -c {path}` prints a start",
        )  # fmt: skip
    handlers = build_handlers(out, json_path, junit_path, live=False)
    finished = asyncio.run(drive(lambda: contract_run(config), handlers))
    raise SystemExit(int(finished.exit_code))


def _seconds(option: str, value: str) -> float:
    from pipeline_check.durations import HINT, parse_duration

    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise ConfigError(option, value, "is not a duration above zero", HINT)
    return seconds


@cli.command()
@config_option
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="canaries per second"
)
@click.option("--window", default="5m", show_default=True, help="the sliding window the SLAs are judged over")
@click.option(
    "--grace",
    default="10s",
    show_default=True,
    help="a canary is lost when older than the freshness threshold (e2e) plus this, and not delivered",
)
@click.option("--listen", default="127.0.0.1:9464", show_default=True, help="HOST:PORT of /metrics, /status, /healthz")
def watch(config_path: Path | None, rate: float, window: str, grace: str, listen: str) -> None:
    """Inject canaries for ever, judge the SLAs over a sliding window, serve Prometheus metrics.

    Runs until SIGTERM or Ctrl-C, then stops cleanly and exits 0; exits 2 for bad settings or a pipeline
    that cannot be reached at startup (later outages are measured, not fatal).
    """
    from pipeline_check.config import find_config, load_config
    from pipeline_check.status import Status
    from pipeline_check.watch import WatchSettings, WindowVerdict, run_watch

    config = load_config(find_config(config_path))
    settings = WatchSettings(
        rate=rate, window=_seconds("--window", window), grace=_seconds("--grace", grace), listen=listen
    )

    def listening(url: str) -> None:
        out.print(escape(f"serving {url}/metrics, {url}/status and {url}/healthz"), soft_wrap=True)

    def verdict(v: WindowVerdict) -> None:
        failed = ", ".join(f"{r.threshold} ({r.status.label})" for r in v.results if r.status >= Status.INCONCLUSIVE)
        text = f"window verdict: {v.label} ({v.canaries} canaries, {v.on_time} on time)"
        out.print(escape(text + (f"; not passed: {failed}" if failed else "")), soft_wrap=True)

    run_watch(
        config,
        settings,
        on_listening=listening,
        on_note=lambda note: err.print(f"note: {escape(mask_text(note))}", soft_wrap=True),
        on_verdict=verdict,
    )
    out.print("watch stopped", soft_wrap=True)


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="pipeline.toml whose Iceberg stage names the table [default: as validate finds it]",
)
@click.option("--run", "run_id", default=None, metavar="RUN_ID", help="the run whose canaries go, e.g. run-167ad57ab")
@click.option("--all-canaries", is_flag=True, help="every run's canaries")
@click.option("--dry-run/--apply", default=True, help="count what would go (default), or delete it")
def cleanup(config_path: Path | None, run_id: str | None, all_canaries: bool, dry_run: bool) -> None:
    """Delete canary rows from the Iceberg table, by tag range, with one delete commit.

    Dry run by default: prints the canary rows per run it would delete. Real trade ids are never in a
    canary range, so nothing else is touched.
    """
    from pipeline_check.cleanup import Selection, delete, iceberg_settings, plan
    from pipeline_check.config import find_config, load_config

    if (run_id is None) == (not all_canaries):
        raise click.UsageError("give --run RUN_ID or --all-canaries (one of them)")
    selection = Selection.every_canary() if all_canaries else Selection.of_run(str(run_id))
    settings, where = iceberg_settings(load_config(find_config(config_path)))
    table, found = plan(settings, where, selection)
    if not found.rows:
        out.print(f"{found.table}: no canary rows of {selection.label}")
        return
    runs = f"{len(found.rows_per_run)} run{'s' if len(found.rows_per_run) != 1 else ''}"
    verb = "would be deleted (dry run; --apply deletes them)" if dry_run else "to delete"
    out.print(f"{found.table}: {found.rows:,} canary rows of {runs} {verb}")
    for run, rows in found.rows_per_run.items():
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started_at))
        out.print(f"  {run}  {rows:>9,} rows  (run started {started})")
    if dry_run:
        return
    done = delete(table, settings.tag_column, found)
    left = f"; {done.left:,} rows of the range written since are left" if done.left else ""
    out.print(f"deleted {done.rows:,} canary rows in snapshot {done.snapshot_id} ({done.operation}){left}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: run the CLI, turn errors into one line and an exit code."""
    # aiokafka logs every refused connection at ERROR; the CLI reports outcomes itself
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="pipeline-check", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        err.print("interrupted")
        return ExitCode.INTERRUPTED
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        _error(f"{where}{exc.format_message()} (see --help)")
        return ExitCode.USAGE_ERROR
    except click.ClickException as exc:
        _error(exc.format_message())
        return ExitCode.USAGE_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except PipelineCheckError as exc:
        _error(str(exc))
        if isinstance(exc, ServiceStartError) and exc.log_tail:
            err.print(escape(exc.log_tail), style="dim", soft_wrap=True, highlight=False)
        return exc.exit_code
    except Exception as exc:
        debug = "--debug" in args
        if debug:
            traceback.print_exc()
        hint = "please report it with the traceback above" if debug else "re-run with --debug for the traceback"
        _error(f"internal error in pipeline-check: {type(exc).__name__}: {exc}; {hint}")
        return ExitCode.INTERNAL_ERROR
    return ExitCode.OK


def _error(message: str) -> None:
    err.print(f"[red]error:[/] {escape(mask_text(one_line(message)))}", soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
