"""raygrid's benchmarks: each compares raygrid with its peers in the same run (see run.py)."""
