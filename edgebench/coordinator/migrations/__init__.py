"""Alembic migrations of the coordinator's store; run by `coordinator serve` on start."""
