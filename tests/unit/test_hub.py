"""The Hub's ordering and repair, on an in-memory journal and broker: gap-fill, duplicates,
resync, replay, and a database that fails in the middle."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime.feeds import State
from realtime.hub import Hub
from tests.unit.fakes import ListSink, MemoryBroker, MemoryJournal

ACCOUNT = "acct-1"


class DatabaseDown(Exception):
    pass


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def hub(journal: MemoryJournal, broker: MemoryBroker) -> Hub:
    return Hub(journal, broker, poll_interval_s=60)


def received(sink: ListSink) -> list[dict[str, Any]]:
    return [json.loads(m) for m in sink.messages]


def seqs(sink: ListSink) -> list[int]:
    return [m["seq"] for m in received(sink) if m["type"] == "balance.updated"]


async def deliver(hub: Hub, events: list[dict[str, Any]]) -> None:
    for event in events:
        await hub.on_message(event["account_id"], json.dumps(event))


async def test_a_skipped_seq_is_filled_from_the_journal(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    journal.append(ACCOUNT)
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=1)
    assert broker.subscribed == {ACCOUNT}
    one, two, three = journal.append(ACCOUNT, 3)
    await deliver(hub, [one, three])  # two was lost on the way
    await deliver(hub, [two, three])  # late and duplicate copies
    assert seqs(sink) == [2, 3, 4]
    assert [m["type"] for m in received(sink)][0] == "subscribed"


async def test_subscribing_replays_from_after_seq_then_goes_live(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 5)
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=2)
    await deliver(hub, journal.append(ACCOUNT))
    assert seqs(sink) == [3, 4, 5, 6]


async def test_without_after_seq_a_snapshot_comes_first(hub: Hub, journal: MemoryJournal) -> None:
    journal.append(ACCOUNT, 2)
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=None)
    await deliver(hub, journal.append(ACCOUNT))
    kinds = [(m["type"], m["seq"]) for m in received(sink)]
    assert kinds == [("subscribed", 2), ("snapshot", 2), ("balance.updated", 3)]


async def test_resync_brings_feeds_up_to_the_journal(hub: Hub, journal: MemoryJournal) -> None:
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    journal.append(ACCOUNT, 3)  # committed, never published (a crash before the publish)
    await hub.resync()
    assert seqs(sink) == [1, 2, 3]


async def test_a_failed_gap_fill_is_counted_and_repaired_later(
    hub: Hub, journal: MemoryJournal
) -> None:
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    one, two = journal.append(ACCOUNT, 2)
    journal.failing = DatabaseDown("database unreachable")
    await deliver(hub, [two])  # must not raise into the broker's listener
    assert (hub.gap_fill.errors, seqs(sink)) == (1, [])
    with pytest.raises(DatabaseDown):
        await hub.resync()  # the journal check fails too, and retries on its own backoff
    journal.failing = None
    await hub.resync()
    assert seqs(sink) == [1, 2]


async def test_a_subscribe_the_database_refuses_leaves_no_feed(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    journal.failing = DatabaseDown("database unreachable")
    with pytest.raises(DatabaseDown):
        await hub.subscribe(ACCOUNT, ListSink(), after_seq=0)
    assert (hub.feeds, broker.subscribed) == ({}, set())


async def test_the_last_unsubscribe_leaves_the_broker_channel(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    first = await hub.subscribe(ACCOUNT, ListSink(), after_seq=0)
    second = await hub.subscribe(ACCOUNT, ListSink(), after_seq=0)
    await hub.unsubscribe(first)
    assert broker.subscribed == {ACCOUNT}
    await hub.unsubscribe(second)
    assert (hub.feeds, broker.subscribed) == ({}, set())


async def test_local_publish_delivers_here_and_hands_to_the_broker(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    await hub.publish_local(journal.append(ACCOUNT, 2))
    assert seqs(sink) == [1, 2]
    assert [account for account, _ in broker.published] == [ACCOUNT, ACCOUNT]


async def test_a_malformed_broker_message_is_dropped(hub: Hub, journal: MemoryJournal) -> None:
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    await hub.on_message(ACCOUNT, "not json")
    await hub.on_message(ACCOUNT, json.dumps({"seq": "x"}))
    await deliver(hub, journal.append(ACCOUNT))
    assert seqs(sink) == [1]


async def test_a_long_poll_returns_once_the_stream_passes_its_seq(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 2)
    await hub.wait_beyond(ACCOUNT, 1, timeout_s=5)  # already beyond: at once
    await hub.wait_beyond(ACCOUNT, 2, timeout_s=0.01)  # nothing new: the timeout
    assert ACCOUNT not in hub.feeds  # a finished long-poll leaves no feed behind


async def test_the_journal_check_catches_up_accounts_that_moved_and_retries_a_failure(
    hub: Hub, journal: MemoryJournal
) -> None:
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    await hub.check_journal()  # nothing moved yet
    journal.clock.advance(seconds=10)
    journal.append(ACCOUNT, 2)  # committed, never published
    journal.failing = DatabaseDown("database unreachable")
    with pytest.raises(DatabaseDown):
        await hub.check_journal()
    journal.failing = None
    journal.clock.advance(seconds=10)
    await hub.check_journal()  # the failed window is checked again, whole
    assert seqs(sink) == []  # seen, left one check to arrive through the broker
    await hub.check_journal()  # still missing: filled from the journal
    assert seqs(sink) == [1, 2]


async def test_concurrent_subscribes_get_their_snapshots_from_one_read(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    accounts = [f"acct-{n}" for n in range(200)]
    for number, account in enumerate(accounts):
        journal.append(account, 1 + number % 3)
    sinks = [ListSink() for _ in range(400)]  # two subscribers per account
    await asyncio.gather(
        *(hub.subscribe(accounts[n % 200], sink, after_seq=None) for n, sink in enumerate(sinks))
    )
    assert len(journal.snapshot_reads) == 1 and sorted(journal.snapshot_reads[0]) == sorted(
        accounts
    )  # one read for all of them, each account asked once
    for number, sink in enumerate(sinks):
        account = accounts[number % 200]
        subscribed, snapshot = received(sink)
        assert subscribed == {
            "type": "subscribed",
            "account_id": account,
            "seq": 1 + number % 200 % 3,
        }
        assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1 + number % 200 % 3
        assert snapshot["account"]["account_id"] == account
    assert broker.subscribed == set(accounts)
    await hub.publish_local(journal.append(accounts[0]))
    assert seqs(sinks[0]) == [2] and seqs(sinks[200]) == [2]


async def test_a_state_read_before_events_went_by_is_read_again(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT)
    stale = State({"account_id": ACCOUNT, "seq": 1})  # read when the head was 1
    await hub.subscribe(ACCOUNT, ListSink(), after_seq=0)  # the feed, at head 1
    await hub.publish_local(journal.append(ACCOUNT, 2))  # events go by: head 3
    late = ListSink()
    feed = hub.feeds[ACCOUNT]
    async with feed.lock:
        covered = await hub._send_snapshot(feed, late, reset=False, state=stale)
    assert covered == 3 and received(late)[0]["seq"] == 3


async def test_a_failed_read_fails_every_subscribe_that_shared_it(
    hub: Hub, journal: MemoryJournal, broker: MemoryBroker
) -> None:
    journal.failing = DatabaseDown("database unreachable")
    outcomes = await asyncio.gather(
        *(hub.subscribe(f"acct-{n}", ListSink(), after_seq=None) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, DatabaseDown) for outcome in outcomes)
    assert (hub.feeds, broker.subscribed) == ({}, set())
    journal.failing = None
    journal.append("acct-0")
    sink = ListSink()
    await hub.subscribe("acct-0", sink, after_seq=None)
    assert received(sink)[1]["seq"] == 1


async def test_resuming_from_before_the_retention_window_gets_a_reset_snapshot(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 6)
    journal.pruned |= {(ACCOUNT, seq) for seq in range(1, 4)}  # 1–3 gone, 4–6 kept
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=1)
    await deliver(hub, journal.append(ACCOUNT))
    kinds = [(m["type"], m["seq"], m.get("reset")) for m in received(sink)]
    assert kinds == [
        ("subscribed", 6, None),
        ("snapshot", 6, True),  # not 4–6 with 2–3 silently missing
        ("balance.updated", 7, None),
    ]


async def test_resuming_at_the_window_edge_replays_without_a_snapshot(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 6)
    journal.pruned |= {(ACCOUNT, seq) for seq in range(1, 4)}
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=3)
    assert seqs(sink) == [4, 5, 6]
    assert not any(m["type"] == "snapshot" for m in received(sink))


async def test_a_gap_met_during_a_replay_ends_it_with_a_reset_snapshot(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 6)
    journal.pruned.add((ACCOUNT, 4))  # pruned between two pages of a long replay
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=1)
    await deliver(hub, journal.append(ACCOUNT))
    kinds = [(m["type"], m["seq"]) for m in received(sink)]
    assert kinds == [
        ("subscribed", 6),
        ("balance.updated", 2),
        ("balance.updated", 3),
        ("snapshot", 6),
        ("balance.updated", 7),
    ]


async def test_an_account_whose_whole_journal_was_pruned_gets_a_reset_snapshot(
    hub: Hub, journal: MemoryJournal
) -> None:
    journal.append(ACCOUNT, 3)
    journal.pruned |= {(ACCOUNT, seq) for seq in range(1, 4)}
    sink = ListSink()
    await hub.subscribe(ACCOUNT, sink, after_seq=0)
    assert [(m["type"], m.get("reset")) for m in received(sink)] == [
        ("subscribed", None),
        ("snapshot", True),
    ]
