"""The poll loop and a run's whole life, from start to its one end."""
