"""Benchmarks: each script prints a table and writes it as JSON to bench/results/."""
