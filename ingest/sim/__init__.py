"""A simulated fleet and scripted scenarios, for demos, tests and benchmarks."""
