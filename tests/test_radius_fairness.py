"""Fairness between NAS as plain data: token buckets, bounded queues, round robin; time passed in."""
import pytest

from radiusd.config import ConfigError, load_settings
from radiusd.core.snapshot import NasInfo, build_snapshot
from radiusd.radius.codec import load_dictionary
from radiusd.radius.endpoint import AUTH, ACCT, Count, Drop, EdgeState, Endpoint
from radiusd.radius.fairness import OVER_RATE, QUEUE_FULL, FairnessLimits, FairQueue
from radiusd.radius.nas_table import NasTable
from radius_packets import SECRET, auth_request


def drain(queue):
    out = []
    while (item := queue.take()) is not None:
        out.append(item)
    return out


def test_round_robin_serves_a_quiet_nas_within_one_turn_of_a_flooding_one():
    queue = FairQueue(FairnessLimits(depth=100))
    for i in range(50):
        assert queue.offer("flood", ("flood", i), now=0.0) is None
    queue.offer("quiet", ("quiet", 0), now=0.0)
    queue.offer("quiet", ("quiet", 1), now=0.0)
    served = drain(queue)
    # the quiet NAS's two requests come 2nd and 4th, not after the flood's 50
    assert served[:4] == [("flood", 0), ("quiet", 0), ("flood", 1), ("quiet", 1)]
    assert len(served) == 52 and len(queue) == 0 and queue.take() is None


def test_a_full_queue_refuses_only_that_nas():
    queue = FairQueue(FairnessLimits(depth=3))
    assert [queue.offer("flood", i, 0.0) for i in range(5)] == [None, None, None, QUEUE_FULL, QUEUE_FULL]
    assert queue.offer("quiet", "q", 0.0) is None
    assert queue.waiting("flood") == 3 and queue.waiting("quiet") == 1
    queue.take()   # flood's first goes: one place free for flood again
    assert queue.offer("flood", 5, 0.0) is None and queue.offer("flood", 6, 0.0) == QUEUE_FULL


def test_token_bucket_allows_burst_then_rate_per_nas():
    queue = FairQueue(FairnessLimits(rate=100, burst=10, depth=10_000))
    admitted = [queue.offer("a", i, 0.0) for i in range(15)]
    assert admitted.count(None) == 10 and admitted[10:] == [OVER_RATE] * 5
    assert queue.offer("b", "other", 0.0) is None            # another NAS has its own bucket
    # 0.05 s later: 5 more tokens for "a", not more
    later = [queue.offer("a", i, 0.05) for i in range(8)]
    assert later.count(None) == 5
    # a long quiet spell refills to the burst, never beyond
    again = [queue.offer("a", i, 100.0) for i in range(12)]
    assert again.count(None) == 10


def test_refused_datagrams_do_not_spend_tokens():
    queue = FairQueue(FairnessLimits(rate=10, burst=2, depth=1))
    assert queue.offer("a", 1, 0.0) is None
    assert queue.offer("a", 2, 0.0) == QUEUE_FULL              # queue full: the token is kept
    queue.take()
    assert queue.offer("a", 3, 0.0) is None                    # ... and spent here


def test_rate_zero_means_no_bucket_and_burst_defaults_to_one_second():
    queue = FairQueue(FairnessLimits(rate=0, depth=1000))
    assert all(queue.offer("a", i, 0.0) is None for i in range(1000))
    queue = FairQueue(FairnessLimits(rate=20, depth=1000))
    assert [queue.offer("a", i, 0.0) for i in range(21)].count(None) == 20
    with pytest.raises(ValueError):
        FairQueue(FairnessLimits(depth=0))


def _edge():
    nas = [NasInfo(1, "gw", "127.0.0.1/32", SECRET), NasInfo(2, "flood", "127.0.0.0/30", SECRET)]
    snapshot = build_snapshot(version=1, nas=nas)
    return EdgeState(snapshot, NasTable.from_snapshot(snapshot))


def test_endpoint_admits_per_nas_and_reports_the_excess_once_per_nas():
    ep = Endpoint(load_dictionary(), duplicate_ttl=30, fairness=FairnessLimits(rate=0, depth=4))
    edge = _edge()
    data, _ = auth_request([("User-Name", "x")])
    # 127.0.0.2 and 127.0.0.3 are one NAS (a /30): they share its queue
    results = [ep.admit(AUTH, data, (f"127.0.0.{2 + i % 2}", 5000 + i), 0.0, edge) for i in range(10)]
    assert results.count(True) == 4
    assert ep.admit(ACCT, data, ("127.0.0.1", 6000), 0.0, edge)       # the other NAS is unaffected
    assert ep.admit(AUTH, data, ("192.0.2.1", 1), 0.0, edge)          # unknown sources: their own queue
    actions = ep.over_budget()
    (drop,) = [a for a in actions if type(a) is Drop]
    assert (drop.port, drop.reason, drop.nas, drop.amount) == (AUTH, "nas_over_budget", "flood", 6)
    counts = {(a.metric, tuple(a.labels.items())): a.amount for a in actions if type(a) is Count}
    assert counts[("radiusd_nas_over_budget_total", (("port", AUTH), ("nas", "flood")))] == 6
    assert counts[("radiusd_packets_received_total", (("port", AUTH),))] == 6
    assert ep.over_budget() == []                                      # reported once
    # served round robin: the quiet NAS's datagram is the 2nd decided, not the 5th
    order = [ep.next_admitted()[2][0] for _ in range(6)]
    assert order[1] == "127.0.0.1" and ep.next_admitted() is None


def test_fairness_settings_from_toml(tmp_path):
    config = tmp_path / "r.toml"
    config.write_text("[fairness]\nrate = 300\nburst = 600\nqueue_depth = 64\n")
    settings = load_settings(config)
    assert (settings.fairness_rate, settings.fairness_burst, settings.fairness_queue_depth) == (300, 600, 64)
    config.write_text("[fairness]\nqueue_depth = 0\n")
    with pytest.raises(ConfigError, match="queue_depth"):
        load_settings(config)
    config.write_text("[fairness]\nrate = -1\n")
    with pytest.raises(ConfigError, match="fairness rate"):
        load_settings(config)


def test_bulk_drops_log_one_line_per_second_counting_every_datagram():
    from radiusd.radius.server import LogLimiter
    clock = [0.0]
    limiter = LogLimiter(interval=1.0, clock=lambda: clock[0])
    key = (AUTH, "nas_over_budget", "127.0.0.2")
    assert limiter.allow(key, 500) == 0            # the first line is logged
    clock[0] = 0.5
    assert limiter.allow(key, 700) is None         # quiet within the second ...
    assert limiter.allow(key, 300) is None
    clock[0] = 1.2
    assert limiter.allow(key, 10) == 1000          # ... and the next line says what went unlogged
