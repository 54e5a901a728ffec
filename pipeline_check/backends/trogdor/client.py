"""Trogdor's coordinator through its REST API: create a task, read its state, stop it.

A task is ``PENDING``, ``RUNNING``, ``STOPPING`` or ``DONE`` (with ``error`` when it failed, ``cancelled``
when it was stopped). Its worker's ``status`` is what the worker last reported, relayed by the coordinator
about once a second: a ProduceBench worker starts with text ("Creating 1 topic(s)", "Created 1 topic(s)":
sending begins), then its figures (``totalSent``, latencies) every 30 s, and the exact count when it stops.
The coordinator leaves empty maps out of its answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from pipeline_check.core.errors import EndpointError

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TaskState:
    """One task as the coordinator tells it."""

    state: str  # PENDING, RUNNING, STOPPING, DONE; UNKNOWN when the coordinator does not know the task
    status: str | dict[str, Any] | None  # the worker's last report
    started_ms: int | None
    done_ms: int | None
    error: str
    cancelled: bool

    @property
    def sending(self) -> bool:
        """The worker is past its preparation (topics checked): records are going out."""
        return isinstance(self.status, dict) or (isinstance(self.status, str) and self.status.startswith("Created"))

    @property
    def sent(self) -> int | None:
        """Records sent and acknowledged (or failed) so far, as last reported; None before the first figures."""
        if isinstance(self.status, dict) and isinstance(self.status.get("totalSent"), int):
            return int(self.status["totalSent"])
        return None


def parse_task(answer: dict[str, Any]) -> TaskState:
    """``GET /coordinator/tasks/{id}`` as a ``TaskState`` (fields the coordinator left out: their defaults)."""
    status = answer.get("status")
    return TaskState(
        state=str(answer.get("state", "UNKNOWN")),
        status=status if isinstance(status, str | dict) else None,
        started_ms=answer.get("startedMs"),
        done_ms=answer.get("doneMs"),
        error=str(answer.get("error") or ""),
        cancelled=bool(answer.get("cancelled", False)),
    )


class Coordinator:
    """The coordinator at ``url`` (``setting`` names it in errors)."""

    def __init__(self, url: str, setting: str) -> None:
        self.url = url.rstrip("/")
        self.setting = setting
        self._http = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)

    async def create(self, task_id: str, spec: dict[str, Any]) -> None:
        await self._call("POST", "/coordinator/task/create", json={"id": task_id, "spec": spec})

    async def stop(self, task_id: str) -> None:
        await self._call("PUT", "/coordinator/task/stop", json={"id": task_id})

    async def task(self, task_id: str) -> TaskState:
        answer = await self._call("GET", f"/coordinator/tasks/{task_id}")
        return parse_task(answer if isinstance(answer, dict) else {})

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise EndpointError(
                self.setting, self.url, f"Trogdor coordinator: {type(exc).__name__}: {exc}",
                "is the coordinator running at that URL?",
            ) from None  # fmt: skip
        if response.status_code == 404 and method == "GET":
            return {"state": "UNKNOWN"}
        if response.status_code >= 400:
            raise EndpointError(
                self.setting, self.url, f"Trogdor coordinator answered {response.status_code} to {method} {path}: "
                f"{response.text[:300]}", "check the agents' names and the coordinator's log",
            )  # fmt: skip
        return response.json() if response.content else None
