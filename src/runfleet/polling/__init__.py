"""When each run is polled next: the heap, the classic backoff, the poll policy, the learned
run times and their fit, scouts, the webhooks' safety net.

Pure: nothing here sends a request or reads a clock; every call takes ``now``. One classic
schedule (:class:`~runfleet.polling.schedule.Backoff`'s defaults) and one way to scale a policy
in time (:meth:`~runfleet.polling.policy.PollPolicy.scaled`).
"""
