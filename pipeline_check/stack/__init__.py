"""Drivers that start, inspect, stop, kill and restart a stack of the pipeline under test."""

from __future__ import annotations

from pipeline_check.stack.local import LocalStack, ServiceStatus, StartReport
from pipeline_check.stack.spec import StackSpec, load_stack

__all__ = ["LocalStack", "ServiceStatus", "StackSpec", "StartReport", "load_stack"]
