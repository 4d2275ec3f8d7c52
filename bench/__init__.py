"""Benchmarks that print the figures the README quotes, one script per question.

Run a script as a module from the repository root, ``python -m
bench.node_latency --help``; ``python bench/node_latency.py`` works too (the
script then puts the repository root first on ``sys.path``, so that
``bench._common`` imports the same way in both cases). Shared helpers live in
:mod:`bench._common`; every script prints its figures and the ratio against
a baseline measured in the same run, and writes ``reports/bench/<name>.json``.
"""
