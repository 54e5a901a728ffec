"""The one error tree of pipeline-check.

::

    PipelineCheckError                    base; ``exit_code`` says how the CLI ends
    ├── ConfigError                       exit 2: a setting or option has a value that cannot work
    ├── EndpointError                     exit 2: an endpoint of the pipeline does not answer as configured
    ├── StackError                        exit 2: the local stack cannot be driven
    │   └── ServiceStartError             a service died or stayed unhealthy while starting
    ├── PluginError                       exit 2: an injector/probe plugin cannot be found or loaded
    └── VerdictFailed (AssertionError)    exit 1: one or more SLA checks did not pass

Messages are one line: ``setting=value (type): what is wrong; how to fix``, with secrets masked.
Anything that is not a ``PipelineCheckError`` is a bug in pipeline-check itself and ends with exit code 3.
"""

from __future__ import annotations

from enum import IntEnum

from pipeline_check.core.redaction import mask_text


class ExitCode(IntEnum):
    """Process exit codes, pytest style (130: interrupted, as shells report SIGINT)."""

    OK = 0
    VERDICT_FAILED = 1
    USAGE_ERROR = 2
    INTERNAL_ERROR = 3
    INTERRUPTED = 130


class PipelineCheckError(Exception):
    """Base of every error pipeline-check raises on purpose."""

    exit_code: ExitCode = ExitCode.USAGE_ERROR


class ConfigError(PipelineCheckError):
    """A setting (or command-line option) has a value that cannot work."""

    def __init__(self, setting: str, value: object, problem: str, fix: str) -> None:
        self.setting = setting
        self.value = value
        self.problem = problem
        self.fix = fix
        shown = mask_text(repr(value))
        super().__init__(one_line(f"{setting}={shown} ({type(value).__name__}): {problem}; {fix}"))


class EndpointError(PipelineCheckError):
    """An endpoint of the pipeline under test does not answer, or not as configured."""

    def __init__(self, setting: str, endpoint: str, problem: str, fix: str) -> None:
        self.setting = setting
        self.endpoint = mask_text(endpoint)
        super().__init__(one_line(f"{setting}={self.endpoint!r} (endpoint): {problem}; {fix}"))


class StackError(PipelineCheckError):
    """The local stack cannot be started, inspected or stopped."""


class ServiceStartError(StackError):
    """A service died or did not become healthy in time; ``log_tail`` holds its last log lines (shown
    apart from the one-line message)."""

    def __init__(self, service: str, problem: str, exit_code: int | None, log_tail: str, log_path: str) -> None:
        self.service = service
        self.returncode = exit_code
        self.log_tail = log_tail
        code = "still running" if exit_code is None else f"exit code {exit_code}"
        super().__init__(one_line(f"service {service!r} failed to start: {problem} ({code}); see {log_path}"))


class PluginError(PipelineCheckError):
    """An injector or probe plugin cannot be found, is ambiguous, or fails to load."""


class VerdictFailed(PipelineCheckError, AssertionError):
    """One or more SLA checks did not pass; the message lists each with observed vs threshold."""

    exit_code = ExitCode.VERDICT_FAILED


def one_line(text: str) -> str:
    """Error messages are one line: a wrapped exception text must not break that."""
    return " ".join(text.split())
