"""Benchmarks of ccx-agent: ``python -m benchmarks`` runs every ``bench_*.py`` module.

Each module has a ``main(argv=None)`` that builds its own data, times it, prints its
figures and returns them. Timings are for reading, never asserted in tests; the figures
and the machine they were taken on are recorded in docs/performance.md.
"""
