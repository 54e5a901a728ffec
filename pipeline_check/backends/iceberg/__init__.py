"""Iceberg: the table probe and its change feed, metadata reads, the passive sampler, the contract reader,
canary cleanup."""
