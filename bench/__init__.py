"""Benchmarks (issue 8): `python -m bench` or `make bench`.

They print figures; they are not tests and do not run in CI. Every process they start (web,
worker, simulator) runs in its own process group and is ended on exit, Ctrl-C included; every
database and Redis database they use is their own (`bench_avatars_*`, Redis DB 15 by default).
"""
