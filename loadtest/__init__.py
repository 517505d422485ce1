"""Load tests and benchmarks for adtier (not shipped in the wheel)."""
