"""The licensing domain as pure functions.

Nothing in this package reads a clock, a file or a socket: every function takes ``now``
and plain data and returns plain data. That is what lets a test walk 400 days in
milliseconds and lets ``simulate`` and the daemon share one code path.
"""
