"""The write path's memory of which account a recent hold belongs to
(storage/writes/hold_owners.py): it completes what an operation named by a hold touches."""

from __future__ import annotations

from storage.writes.batch import NOTHING, Touches
from storage.writes.hold_owners import HoldOwners


def test_a_hold_remembered_names_its_account() -> None:
    owners = HoldOwners()
    owners.learn([("hold_1", "alice"), ("hold_2", "bob")])
    assert owners.complete(Touches(holds=("hold_1",))) == Touches(
        accounts=("alice",), holds=("hold_1",)
    )


def test_what_is_not_remembered_or_already_named_is_left_as_it_is() -> None:
    owners = HoldOwners()
    owners.learn([("hold_1", "alice"), ("hold_2", "alice")])
    unknown = Touches(holds=("hold_9",))
    assert owners.complete(unknown) is unknown
    named = Touches(accounts=("alice",), holds=("hold_1", "hold_2"))
    assert owners.complete(named) is named
    assert owners.complete(NOTHING) is NOTHING
    # two holds of one account name it once, after what was named already
    both = owners.complete(Touches(accounts=("carol",), holds=("hold_1", "hold_2", "hold_9")))
    assert both.accounts == ("carol", "alice")


def test_it_is_bounded_and_forgets_the_oldest_first() -> None:
    owners = HoldOwners(most=3)
    owners.learn([(f"hold_{i}", f"acct_{i}") for i in range(5)])
    assert len(owners) == 3
    assert owners.complete(Touches(holds=("hold_1",))).accounts == ()
    assert owners.complete(Touches(holds=("hold_2",))).accounts == ("acct_2",)
    owners.learn([("hold_5", "acct_5")])
    assert len(owners) == 3
    assert owners.complete(Touches(holds=("hold_2",))).accounts == ()
