"""Builders of small local models for tests and benchmarks (no network, deterministic)."""
