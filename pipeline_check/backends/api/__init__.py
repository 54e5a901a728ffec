"""A query API: the probe, the reader, the passive sampler, the API load, the contract reader."""
