"""The benchmark: the machine, its ceilings, FLOPs, and the harness against its peers."""
