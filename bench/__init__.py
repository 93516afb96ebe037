"""Benchmarks of the inventory actor on a real nats-server: `python -m bench` (`make bench`)."""
