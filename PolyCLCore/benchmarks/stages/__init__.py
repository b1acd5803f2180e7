"""Benchmark stages: each module exposes ``run(ctx) -> list[Row]``."""
