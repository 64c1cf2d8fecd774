"""The SSM simulator: a real server speaking ``ccx-sl/1`` (docs/protocol.md, docs/simulator.md).

It is not a mock: it keeps its state in SQLite, has its own CA, verifies every signature
and refuses what a real server would refuse. Tests, the demo and lab setups run it over
HTTPS (:mod:`.server`); the what-if simulator calls :class:`.core.Simulator` in process.
"""
