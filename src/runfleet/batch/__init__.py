"""``runfleet batch``: the input, the journal, one session, its report and its progress."""
