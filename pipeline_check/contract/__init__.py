"""Contracts: what each stage must hold (``[contract]``, :mod:`.model`), checked against the stages as they
are (:mod:`.check`), and a starting contract from their current schemas (:mod:`.snapshot`). Import the
modules you need; this package imports nothing on its own."""
