"""Passive samplers, one per probe type, and their registry (see :mod:`.base`)."""

from pipeline_check.passive.samplers.base import SAMPLERS, Reading, Sampler, SamplerContext

__all__ = ["SAMPLERS", "Reading", "Sampler", "SamplerContext"]
