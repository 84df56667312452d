"""Tool handlers for ``runfleet batch --tools examples/tools_example.py:TOOLS``.

Each ``@tool`` function answers the model's calls of its name: async ones run on the event
loop, sync ones in worker threads. The list named on the command line is what the batch
registers; the model sees each function's signature and docstring as its schema.

    runfleet batch examples/prompts.jsonl --out results.jsonl --model gpt-5-mini \\
        --tools examples/tools_example.py:TOOLS --sim tools --sim-time-scale 0.05
"""

from __future__ import annotations

from runfleet import tool


@tool
async def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny and 21 C in {city}"


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """An order's state (a sync handler: it runs in a worker thread)."""
    return {"order": order_id, "state": "shipped"}


TOOLS = [get_weather, lookup_order]
