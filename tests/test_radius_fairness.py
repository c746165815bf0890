"""Fairness between NAS as plain data: token buckets, bounded queues, round robin; time passed in."""
import pytest

from radiusd.config import ConfigError, load_settings
from radiusd.core.snapshot import NasInfo, build_snapshot
from radiusd.radius.codec import load_dictionary
from radiusd.radius.endpoint import AUTH, ACCT, Count, Drop, EdgeState, Endpoint
from radiusd.radius.fairness import ADAPT_WINDOW, CEILING_UP, CONTENDING_FOR, OVER_RATE, QUEUE_FULL, FairnessLimits, FairQueue
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
    actions = ep.over_budget(edge)
    (drop,) = [a for a in actions if type(a) is Drop]
    assert (drop.port, drop.reason, drop.nas, drop.amount) == (AUTH, "nas_over_budget", "flood", 6)
    assert drop.fields["limit"] == "queue_full" and "depth" in drop.fields["detail"]   # which limit, said
    counts = {(a.metric, tuple(a.labels.items())): a.amount for a in actions if type(a) is Count}
    assert counts[("radiusd_nas_over_budget_total", (("port", AUTH), ("nas", "flood"), ("limit", "queue_full")))] == 6
    assert counts[("radiusd_packets_received_total", (("port", AUTH),))] == 6
    assert ep.over_budget(edge) == []                                      # reported once
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
    assert load_settings().fairness_adaptive is True    # on unless turned off
    config.write_text("[fairness]\nadaptive = false\n")
    assert load_settings(config).fairness_adaptive is False
    config.write_text('[fairness]\nadaptive = "maybe"\n')
    with pytest.raises(ConfigError, match="adaptive.*true or false"):
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


# --- the adaptive ceiling: a busy worker shared by contending NAS ----------------------------

def _window(queue, t: float, offers: dict, busy: float, seconds: float = 0.25):
    """Offer each NAS its datagrams spread over one window (0.25 s: exact in binary), then the
    server's look at its end, the loop `busy` (share) of it."""
    results = {key: [] for key in offers}
    for key, count in offers.items():
        for i in range(count):
            results[key].append(queue.offer(key, i, t + seconds * i / max(count, 1)))
    while queue.take() is not None:
        pass
    return results, queue.observe(t + seconds, busy * seconds)


def _flood_held(other: str = "quiet", windows: int = 4, **limits) -> tuple[FairQueue, float]:
    """A queue whose worker was busy for `windows` windows of a flood (1,000 per window) beside
    `other` (10 per window): the ceiling is down. Returns it and the time of the next window."""
    queue = FairQueue(FairnessLimits(**{"rate": 5000, "depth": 100_000, "adaptive": True, **limits}))
    queue.observe(0.0, 0.0)
    t = 0.0
    for _ in range(windows):
        _window(queue, t, {"flood": 1000, other: 10}, busy=0.95)
        t += 0.25
    assert queue.ceiling is not None
    return queue, t


def test_a_flooding_nas_is_held_below_a_ceiling_while_the_quiet_nas_is_served_whole():
    queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
    queue.observe(0.0, 0.0)
    t, ceilings = 0.0, []
    for _ in range(10):   # two seconds of a saturated worker: flood 1,000 per window, quiet 10
        results, ceiling = _window(queue, t, {"flood": 1000, "quiet": 10}, busy=0.95)
        assert results["quiet"] == [None] * 10          # the quiet NAS never loses one
        ceilings.append(ceiling)
        t += 0.25
    assert queue.ceiling is not None and queue.ceiling < 1000
    # the first time straight down to twice the quiet NAS's rate (40/s): the flood is held at once
    assert all(c is None or c > 0 for c in ceilings) and ceilings[0] == pytest.approx(2 * 40)
    # under the ceiling the flood gets about ceiling * window per window, the rest refused at once
    results, _ = _window(queue, t, {"flood": 1000, "quiet": 10}, busy=0.95)
    assert results["flood"].count(None) <= queue.ceiling * 0.25 * 2 + 1
    assert set(results["flood"]) == {None, OVER_RATE} and results["quiet"] == [None] * 10


def test_a_nas_alone_keeps_the_whole_worker_and_equal_nas_no_ceiling():
    alone = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
    alone.observe(0.0, 0.0)
    equal = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
    equal.observe(0.0, 0.0)
    for n in range(10):
        _, ceiling = _window(alone, n * 0.25, {"big": 900}, busy=1.0)
        assert ceiling is None
        _, ceiling = _window(equal, n * 0.25, {"a": 450, "b": 450}, busy=1.0)
        assert ceiling is None
    assert alone.ceiling is None and equal.ceiling is None


def test_the_ceiling_rises_when_the_worker_idles_and_is_lifted_when_the_flood_stops():
    queue, t = _flood_held(windows=3)
    low = queue.ceiling
    _, ceiling = _window(queue, t, {"flood": 1000, "quiet": 10}, busy=0.3)   # the worker has room again
    assert ceiling == pytest.approx(low * CEILING_UP)
    t += 0.25
    _, ceiling = _window(queue, t, {"quiet": 10}, busy=0.1)                  # the flood stopped
    assert ceiling == 0.0 and queue.ceiling is None
    results, _ = _window(queue, t + 0.25, {"flood": 900, "quiet": 10}, busy=0.1)
    assert results["flood"].count(None) > 400      # the bucket's own rate again (burst 5,000)


def test_adaptive_off_keeps_the_fixed_rate():
    queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=False))
    for n in range(10):
        _, ceiling = _window(queue, n * 0.25, {"flood": 1000, "quiet": 10}, busy=1.0)
        assert ceiling is None
    assert queue.ceiling is None


def test_a_machine_short_of_cpu_brings_the_ceiling_down_though_the_worker_looks_idle():
    """The flooding processes take the cores: the worker's own loop and CPU look half idle, but
    the machine's tasks wait for a CPU (Linux PSI) nearly all the time."""
    def run(stall_share: float) -> FairQueue:
        queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
        queue.observe(0.0, 0.0, cpu=0.0, stalled=0.0)
        for n in range(1, 4):   # windows of 0.25 s: flood 2,000/s, quiet 4/s, the loop 40 % busy
            for i in range(500):
                queue.offer("flood", i, n * 0.25 - 0.25 + i / 2000)
            queue.offer("quiet", n, n * 0.25 - 0.1)
            while queue.take() is not None:
                pass
            queue.observe(n * 0.25, 0.1, cpu=n * 0.1, stalled=n * 0.25 * stall_share)
        return queue

    assert run(stall_share=0.96).ceiling < 2000      # short of CPU: the flood is held down
    assert run(stall_share=0.04).ceiling is None     # the same traffic on a machine with room


def test_a_flood_that_stopped_leaves_no_ceiling_on_the_next_busy_nas():
    """After a flood from another NAS has stopped, one switch on a busy worker (its store
    stalled, say) gets its whole rate back at the next look, and is not clamped in the seconds
    the flooder still counts as contending: the ceiling was for the flooder."""
    queue, t = _flood_held(other="busy")                              # a flood, clamped
    assert queue.ceiling < 500
    _, ceiling = _window(queue, t, {"busy": 500}, busy=0.95)           # the flood stops
    assert ceiling == 0.0                                             # lifted at this window's look
    t += 0.25
    quiet_from = t
    while t < quiet_from + CONTENDING_FOR + 1:                        # busy and 2,000/s: never clamped
        results, ceiling = _window(queue, t, {"busy": 500}, busy=0.95)
        assert ceiling is None and results["busy"] == [None] * 500
        t += 0.25


def test_a_ceiling_is_lifted_when_its_nas_sends_less_however_busy_the_worker():
    queue, t = _flood_held()
    low = queue.ceiling
    # the flood eases to a quarter of the ceiling: lifted, though the worker is still busy (the
    # worker's load alone would keep it for windows)
    _, ceiling = _window(queue, t, {"flood": int(low * 0.25 / 4), "quiet": 10}, busy=0.95)
    assert ceiling == 0.0 and queue.ceiling is None


def test_a_lifted_ceiling_gives_every_nas_its_burst_back():
    """A switch's burst right after a flood elsewhere has stopped (say, a stalled store's
    records at once) meets its own bucket, not what the ceiling left of it."""
    queue, t = _flood_held(other="busy", burst=5000)
    t += CONTENDING_FOR + 1
    _window(queue, t, {"busy": 1}, busy=0.1)       # after a quiet spell: lifted at the first datagram
    assert queue.ceiling is None
    results, _ = _window(queue, t + 0.25, {"busy": 4000}, busy=0.5, seconds=0.01)
    assert results["busy"] == [None] * 4000


def test_a_nas_first_heard_in_part_of_a_window_is_not_held_below_its_rate():
    """The quiet NAS starts late in a window: measured on that part, twice its rate looks small.
    The ceiling meets only a NAS that sent more than it, and follows what the others send: the
    quiet NAS never loses one."""
    queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
    queue.observe(0.0, 0.0)
    for i in range(1000):
        queue.offer("flood", i, 0.25 * i / 1000)
    queue.offer("quiet", 0, 0.24)                       # 4/s measured; it sends 200/s
    while queue.take() is not None:
        pass
    assert queue.observe(0.25, 0.95 * 0.25) == pytest.approx(50)   # FLOOR: 2 x 4/s is less
    t = 0.25
    for _ in range(8):
        results, _ = _window(queue, t, {"flood": 1000, "quiet": 50}, busy=0.95)
        t += 0.25
        assert queue.ceiling >= 2 * 200 and results["quiet"] == [None] * 50


# --- workers: the NAS a worker never hears still counts (radiusd.radius.fairness_board) ---------

def test_a_worker_that_never_hears_the_other_nas_clamps_the_flood_it_carries():
    """The kernel gave the quiet NAS's flows to another worker: this one hears the flood only, but
    the other worker's post says the quiet NAS is there, and they share the CPUs."""
    def run(elsewhere_of) -> FairQueue:
        queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
        queue.observe(0.0, 0.0)
        t = 0.0
        for _ in range(6):
            for i in range(1000):
                queue.offer("flood", i, t + 0.25 * i / 1000)
            while queue.take() is not None:
                pass
            t += 0.25
            queue.observe(t, 0.95 * 0.25, elsewhere=elsewhere_of(t))
        return queue

    quiet_elsewhere = run(lambda t: [("quiet", t - 0.01, 40.0, t - 0.05)])
    assert quiet_elsewhere.ceiling is not None and 2 * 40 <= quiet_elsewhere.ceiling < 1000
    assert run(lambda t: []).ceiling is None                                # alone on the server
    # another worker that stopped posting (it idles, or died): its rates no longer count, and
    # after CONTENDING_FOR neither does its NAS
    assert run(lambda t: [("quiet", t - 1.0, 40.0, t - 1.0)]).ceiling is None
    assert run(lambda t: [("quiet", t - CONTENDING_FOR, 40.0, t - 0.1)]).ceiling is None


def test_the_board_carries_posts_between_forked_workers():
    import multiprocessing

    from radiusd.radius.fairness_board import FairnessBoard

    board = FairnessBoard(workers=2)
    first, successor, second = board.slot(0), board.slot(3), board.slot(1)
    first.post(10.0, [(7, 9.5, 1234.5), (None, 9.9, 3.0)])

    def child():
        successor.post(11.0, [(42, 10.9, 77.0)])

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(10)
    assert proc.exitcode == 0
    assert sorted(second.read(), key=str) == sorted(
        [(7, 9.5, 1234.5, 10.0), (None, 9.9, 3.0, 10.0), (42, 10.9, 77.0, 11.0)], key=str)
    assert first.read() == [(42, 10.9, 77.0, 11.0)]      # its own post is not news to a worker
    import struct

    from radiusd.radius.fairness_board import SLOT
    struct.pack_into("<Q", board._mem, 3 * SLOT, 5)                 # a post half written: skipped
    assert first.read() == []


def test_the_ceiling_follows_the_other_nas_up_whatever_the_load():
    """Held down while the quiet NAS sent 40/s; it then sends 400/s on a worker between BUSY_LOW
    and BUSY_HIGH (where the ceiling neither falls nor rises): the ceiling makes room for it."""
    queue, t = _flood_held()
    assert queue.ceiling == pytest.approx(80)
    _window(queue, t, {"flood": 1000, "quiet": 100}, busy=0.6)
    assert queue.ceiling == pytest.approx(2 * 400)
    results, _ = _window(queue, t + 0.25, {"flood": 1000, "quiet": 100}, busy=0.6)
    assert results["quiet"] == [None] * 100 and queue.ceiling == pytest.approx(2 * 400)


def test_a_ceiling_sheds_the_backlog_its_flooder_queued_before_it():
    """The flood queued 1,000 under the old budget: decided, they would hold the worker for the
    quiet NAS's first answers. The ceiling keeps the newest of them (one window's worth) and hands
    the rest to the caller to count; the quiet NAS's queue is untouched."""
    queue = FairQueue(FairnessLimits(rate=5000, depth=100_000, adaptive=True))
    queue.observe(0.0, 0.0)
    for i in range(1000):
        queue.offer("flood", i, 0.25 * i / 1000)
    for i in range(10):
        queue.offer("quiet", i, 0.25 * i / 10)
    assert queue.observe(0.25, 0.95 * 0.25) == pytest.approx(80)
    kept = int(80 * ADAPT_WINDOW)
    assert queue.waiting("flood") == kept and queue.waiting("quiet") == 10
    assert [item for key, item in queue.shed] == list(range(1000 - kept)) and {k for k, _ in queue.shed} == {"flood"}
    taken = [queue.take() for _ in range(kept + 10)]
    assert sorted(i for i in taken if i >= 10) == list(range(1000 - kept, 1000))   # the newest are kept


def test_the_endpoint_counts_what_the_ceiling_shed_as_over_rate():
    ep = Endpoint(load_dictionary(), duplicate_ttl=30, fairness=FairnessLimits(rate=5000, depth=100_000))
    edge = _edge()
    data, _ = auth_request([("User-Name", "x")])
    ep.fair.observe(0.0, 0.0)
    for i in range(1000):
        assert ep.admit(AUTH, data, ("127.0.0.2", 5000 + i), 0.25 * i / 1000, edge)
    for i in range(10):
        assert ep.admit(AUTH, data, ("127.0.0.1", 6000 + i), 0.25 * i / 10, edge)
    ep.fair.observe(0.25, 0.95 * 0.25)
    shed = len(ep.fair.shed)
    assert shed > 900
    actions = ep.over_budget(edge)
    (drop,) = [a for a in actions if type(a) is Drop]
    assert (drop.nas, drop.amount, drop.fields["limit"]) == ("flood", shed, "over_rate")
    assert ep.fair.shed == [] and ep.over_budget(edge) == []
