"""Scripts that measure figures about the benchmark machinery itself."""
