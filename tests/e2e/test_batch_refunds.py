"""`refund` as a `POST /v1/batch` operation, on SQLite and PostgreSQL: each refund part answers
as `POST /v1/refunds` would, a refused one leaves nothing behind, and a refund may follow the
capture it gives back within the same batch."""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiClient
from tests.e2e.test_refunds import account, assert_audit_clean, charge, grant, post


async def batch(
    api: ApiClient, operations: list[dict[str, Any]], status: int = 200
) -> dict[str, Any]:
    return await post(api, "/v1/batch", {"operations": operations}, status)


async def test_refunds_in_a_batch(api: ApiClient, database_url: str) -> None:
    await grant(api, "br", 200)
    made = await charge(api, "br", 40)
    opened = await post(api, "/v1/holds", {"account_id": "br", "amount": 20}, 201)
    hold_id = opened["hold"]["hold_id"]
    before = await account(api, "br")

    results = (
        await batch(
            api,
            [
                {
                    "op": "refund",
                    "charge_id": made["charge_id"],
                    "amount": 10,
                    "reason": "bad result",
                    "metadata": {"ticket": "7"},
                },
                {"op": "capture", "hold_id": hold_id, "amount": 15},
                {"op": "refund", "hold_id": hold_id, "amount": 5},  # the capture just above
                {"op": "refund", "charge_id": made["charge_id"], "amount": 31},  # 30 left: refused
                {"op": "refund", "charge_id": "chg_unknown"},
                {"op": "refund", "charge_id": made["charge_id"]},  # the rest
            ],
        )
    )["results"]
    assert [r["status"] for r in results] == [201, 200, 201, 409, 404, 201]
    first, from_hold, rest = results[0]["body"], results[2]["body"], results[5]["body"]
    assert (first["refund"]["amount"], first["refund"]["refundable"]) == (10, 30)
    assert first["refund"]["metadata"] == {"ticket": "7"}
    assert (from_hold["refund"]["hold_id"], from_hold["refund"]["refundable"]) == (hold_id, 10)
    assert results[3]["body"]["error"]["code"] == "refund_exceeds_spend"
    assert results[3]["body"]["error"]["refundable"] == 30
    assert results[4]["body"]["error"]["code"] == "not_found"
    assert (rest["refund"]["amount"], rest["refund"]["refundable"]) == (30, 0)

    # +40 refunded of the charge, -15 captured +5 refunded of the hold
    assert (await account(api, "br"))["balance"] == before["balance"] + 40 - 15 + 5
    for answer in (first, from_hold, rest):
        refund_id = answer["refund"]["refund_id"]
        read = await api.http.get(f"/v1/refunds/{refund_id}", headers=api.server())
        assert read.json() == answer["refund"]
    await assert_audit_clean(database_url)


async def test_a_malformed_refund_part_refuses_the_batch_whole(api: ApiClient) -> None:
    await grant(api, "br-bad", 50)
    made = await charge(api, "br-bad", 10)
    before = await account(api, "br-bad")
    for part in (
        {"op": "refund"},
        {"op": "refund", "charge_id": made["charge_id"], "hold_id": "h"},
        {"op": "refund", "charge_id": made["charge_id"], "amount": 0},
    ):
        answer = await batch(api, [{"op": "grant", "account_id": "br-bad", "amount": 1}, part], 422)
        assert answer["error"]["code"] == "validation_error"
    assert await account(api, "br-bad") == before
