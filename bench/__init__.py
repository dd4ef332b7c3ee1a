"""Benchmarks (`make bench`): served throughput and latency against an in-process ceiling, same run."""
