"""Refund reads on SQLite and PostgreSQL: `GET /v1/refunds/{id}` answers what `POST
/v1/refunds` did, `GET /v1/charges/{id}` and `GET /v1/holds/{id}` list a spend's refunds, and
who may read them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.conftest import ApiClient
from tests.e2e.test_refunds import charge, grant, post, refund


async def get(
    api: ApiClient, path: str, status: int = 200, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await api.http.get(path, headers=api.server() if headers is None else headers)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_refund_reads_as_it_was_made_and_its_charge_lists_it(api: ApiClient) -> None:
    await grant(api, "rr-charge", 100)
    made = await charge(
        api, "rr-charge", 30, ref="render-7", metadata={"job": "j1"}, reason="render"
    )
    first = (
        await refund(
            api,
            {
                "charge_id": made["charge_id"],
                "amount": 5,
                "reason": "bad result",
                "metadata": {"ticket": "4411"},
            },
        )
    )["refund"]
    second = (await refund(api, {"charge_id": made["charge_id"], "amount": 7}))["refund"]

    assert await get(api, f"/v1/refunds/{first['refund_id']}") == first
    assert await get(api, f"/v1/refunds/{second['refund_id']}") == second

    read = await get(api, f"/v1/charges/{made['charge_id']}")
    assert read == {**made, "refunded": 12, "refundable": 18, "refunds": [first, second]}
    # the account's own user token reads its charge; another account's does not
    assert await get(api, f"/v1/charges/{made['charge_id']}", headers=api.user("rr-charge")) == read
    other = await get(api, f"/v1/charges/{made['charge_id']}", 403, api.user("someone"))
    assert other["error"]["code"] == "forbidden"


async def test_a_captured_holds_refunds_are_listed_with_it(api: ApiClient) -> None:
    await grant(api, "rr-hold", 100)
    opened = await post(api, "/v1/holds", {"account_id": "rr-hold", "amount": 20}, 201)
    hold_id = opened["hold"]["hold_id"]
    open_hold = await get(api, f"/v1/holds/{hold_id}")
    assert "refunds" not in open_hold  # nothing to refund yet
    await post(api, f"/v1/holds/{hold_id}/capture", {"amount": 15}, 200)
    assert (await get(api, f"/v1/holds/{hold_id}"))["refunds"] == []
    made = (await refund(api, {"hold_id": hold_id, "amount": 4}))["refund"]
    read = await get(api, f"/v1/holds/{hold_id}", headers=api.user("rr-hold"))
    assert read["status"] == "captured" and read["refunds"] == [made]
    assert await get(api, f"/v1/refunds/{made['refund_id']}") == made


async def test_refund_and_charge_reads_refuse_the_unknown_and_the_unentitled(
    api: ApiClient,
) -> None:
    await grant(api, "rr-who", 50)
    made = await charge(api, "rr-who", 10)
    done = (await refund(api, {"charge_id": made["charge_id"]}))["refund"]
    # refunds are support's: a user token may not read one, even of its own account
    refused = await get(api, f"/v1/refunds/{done['refund_id']}", 403, api.user("rr-who"))
    assert refused["error"]["code"] == "forbidden"
    await get(api, f"/v1/refunds/{done['refund_id']}", 401, {})
    for unknown in ("rfd_nope", "chg_x", "x" * 200, "%00", "rfd_%F0%9F%92%A5"):
        assert (await get(api, f"/v1/refunds/{unknown}", 404))["error"]["code"] == "not_found"
    for unknown in ("chg_nope", done["refund_id"], "%00", "x" * 200):
        await get(api, f"/v1/charges/{unknown}", 404)
    # a hold id is not a charge id
    opened = await post(api, "/v1/holds", {"account_id": "rr-who", "amount": 1}, 201)
    await get(api, f"/v1/charges/{opened['hold']['hold_id']}", 404)


async def test_a_refund_is_found_through_its_index(api: ApiClient, database_url: str) -> None:
    """The lookup uses the partial expression index of migration 0005 on either database."""
    from storage.journal_queries import REFUND_ID_EXPRESSION

    db = api.ctx.db
    async with db.read() as uow:
        dialect = uow.conn.dialect.name
        where = f"type = 'refund' AND {REFUND_ID_EXPRESSION[dialect]} = 'rfd_x'"
        if dialect == "sqlite":
            plan = (
                await uow.conn.execute(
                    sa.text(f"EXPLAIN QUERY PLAN SELECT op_id FROM entries WHERE {where}")
                )
            ).all()
            text = " ".join(str(row[-1]) for row in plan)
        else:
            await uow.conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = (
                await uow.conn.execute(sa.text(f"EXPLAIN SELECT op_id FROM entries WHERE {where}"))
            ).all()
            text = " ".join(str(row[0]) for row in plan)
    assert "ix_entries_refund_id" in text, text
