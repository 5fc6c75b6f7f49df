"""Benchmarks: run with `make bench`; they measure, they do not assert."""
