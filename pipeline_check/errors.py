"""The one error tree of pipeline-check.

::

    PipelineCheckError                    base; ``exit_code`` says how the CLI ends
    ├── UsageError                        exit 2: bad command line or config
    │   └── ConfigError                   a setting has a wrong value (names the setting and the fix)
    ├── EndpointError                     exit 2: an endpoint of the pipeline does not answer
    ├── StackError                        exit 2: the local stack cannot be driven
    │   └── ServiceStartError             a service died or stayed unhealthy while starting
    ├── PluginError                       exit 2: a registered injector/probe/check cannot be loaded
    └── VerdictFailed (AssertionError)    exit 1: one or more SLA checks failed

Messages follow ``setting=value (type): what is wrong; how to fix``. Anything that is not a
``PipelineCheckError`` is a bug in pipeline-check itself and ends with exit code 3.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, pytest style."""

    OK = 0
    VERDICT_FAILED = 1
    USAGE_ERROR = 2
    INTERNAL_ERROR = 3


class PipelineCheckError(Exception):
    """Base of every error pipeline-check raises on purpose."""

    exit_code: ExitCode = ExitCode.USAGE_ERROR


class UsageError(PipelineCheckError):
    """The command line or configuration cannot be used as given."""


class ConfigError(UsageError):
    """A configuration setting has a value that cannot work."""

    def __init__(self, setting: str, value: object, problem: str, fix: str) -> None:
        self.setting = setting
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{setting}={value!r} ({type(value).__name__}): {problem}; {fix}")


class EndpointError(PipelineCheckError):
    """An endpoint of the pipeline under test does not answer."""

    def __init__(self, setting: str, endpoint: str, problem: str, fix: str) -> None:
        self.setting = setting
        self.endpoint = endpoint
        super().__init__(f"{setting}={endpoint!r} (endpoint): {problem}; {fix}")


class StackError(PipelineCheckError):
    """The local stack cannot be started, inspected or stopped."""


class ServiceStartError(StackError):
    """A service died or did not become healthy in time; carries its last log lines."""

    def __init__(self, service: str, problem: str, exit_code: int | None, log_tail: str) -> None:
        self.service = service
        self.returncode = exit_code
        self.log_tail = log_tail
        code = "still running" if exit_code is None else f"exit code {exit_code}"
        super().__init__(f"service {service!r} failed to start: {problem} ({code}); last log lines:\n{log_tail}")


class PluginError(PipelineCheckError):
    """A plugin registered through an entry point cannot be loaded or is malformed."""


class VerdictFailed(PipelineCheckError, AssertionError):
    """One or more SLA checks failed; the message lists each with observed vs threshold."""

    exit_code = ExitCode.VERDICT_FAILED
