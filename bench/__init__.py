"""Benchmarks: ``make bench`` starts Tollway as a user runs it and drives load from
another process (wrk when installed, else a Python load generator). Each scenario
writes ``bench/results/<name>.json``; every result carries the health baseline of
the same run so figures compare across machines as ratios."""
