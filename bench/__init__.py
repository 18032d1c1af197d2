"""Benchmark of the Order Cancel Flow against the fakes (issue 6): run it with `bin/bench`.

Not part of the test suite. `bench.run` drives the measurements, each in a fresh subprocess
(`bench.child`), and writes bench/results.json and bench/results.md.
"""
