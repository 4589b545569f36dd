"""Load and latency measurements of a real `python -m service` process (`python -m benchmarks`)."""
