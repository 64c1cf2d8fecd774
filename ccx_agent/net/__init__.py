"""The network layer: one HTTP client (``requests`` with a wall-clock deadline per exchange
and a stop that cuts it) for SSM, UCCX/Finesse and the doctor's probes."""
