"""Each rollup counter has one definition over raw rows (metrics.rollups), which
reading a window's edges and rebuilding a day both aggregate with."""

from metrics.models import COUNTERS
from metrics.rollups import conversation_facts, score_facts, trace_facts, voice_call_facts


def test_every_counter_is_defined_once_over_raw_rows():
    facts = [trace_facts(), conversation_facts(), score_facts(), voice_call_facts()]
    names = [name for group in facts for name in group]
    assert len(names) == len(set(names))
    # Other costs come from billing's usage events, added through its rebuild hook.
    assert set(names) == set(COUNTERS) - {"other_cost_usd"}
