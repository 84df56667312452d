"""When each run is polled next: the heap, backoff, the learned run times, scouts, the
webhooks' safety net.

Pure: nothing here sends a request or reads a clock; every call takes ``now``.
"""
