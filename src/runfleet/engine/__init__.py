"""The engine: a run's life from start to end, the one poll loop, and the handles users await."""
