"""Canaries: their tags, the trades that carry them, how a stage's record gives a tag back, field fidelity,
partition coverage."""
