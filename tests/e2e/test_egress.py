"""Outbound requests through egress/: the address policy (IPv6 forms that embed IPv4, messages
that do not map the internal network), connects pinned to the checked address (DNS
rebinding), provider result fetches refused on internal addresses and redirects checked hop
by hop. Real HTTP servers on loopback addresses (tests/receiver.py); the only stand-in is the
DNS resolver, which egress takes as a function so a test can steer its answers.

    .venv/bin/pytest tests/e2e/test_egress.py -q
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config import Settings
from egress import Egress, Failed, IpAddress, Rules, UrlRefused, is_public
from tests.conftest import ApiClient
from tests.receiver import Receiver
from tests.support import free_port
from wiring import egress_for

EMBEDDED_OR_RESERVED = (
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a00:1",
    "::127.0.0.1",
    "::ffff:0:7f00:1",
    "2002:a9fe:a9fe::",
    "fec0::1",
    "5f00::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "3fff::1",
    "2001:db8::1",
)
ALL_TYPES = ["balance.updated", "job.updated", "credits.low"]


class SteeredResolver:
    """A DNS resolver whose answers the test sets: `answers` are given in turn (the last one
    repeats), and every question is kept."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = [[ipaddress.ip_address(a) for a in answer] for answer in answers]
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IpAddress]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def _egress(resolve: Callable[..., Any], **settings: Any) -> Egress:
    return egress_for(Settings(**settings), resolve)


# --- the address policy ---------------------------------------------------------------------


@pytest.mark.parametrize("address", EMBEDDED_OR_RESERVED)
def test_ipv6_forms_that_embed_ipv4_or_are_reserved_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_ipv6_and_nat64_of_a_public_ipv4_stay_allowed() -> None:
    for address in (
        "2606:4700:4700::1111",
        "64:ff9b::5db8:d70e",
        "2002:5db8:d70e::1",
        "93.184.215.14",
    ):
        assert is_public(ipaddress.ip_address(address)), address


async def test_each_ipv6_form_is_refused_at_registration(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    api: ApiClient = await api_factory(sqlite_url)
    for address in EMBEDDED_OR_RESERVED:
        refused = await api.http.post(
            "/v1/webhook-endpoints",
            headers=api.server(),
            json={"url": f"http://[{address}]/hook", "events": ALL_TYPES},
        )
        assert refused.status_code == 422, (address, refused.text)
        assert refused.json()["error"]["code"] == "url_not_allowed", address


async def test_a_refusal_does_not_say_what_a_name_resolves_to(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    api: ApiClient = await api_factory(sqlite_url)
    refused = await api.http.post(
        "/v1/webhook-endpoints",
        headers=api.server(),
        json={"url": "http://localhost:9/hook", "events": ALL_TYPES},
    )
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert "non-public address" in message
    assert "127.0.0.1" not in message and "::1" not in message


# --- DNS rebinding ----------------------------------------------------------------------------


async def test_the_connect_goes_to_the_checked_address() -> None:
    """The name is resolved once, by the check; the connect uses that answer (the receiver
    listens on 127.0.0.2 only, the name's second answer would be 127.0.0.1) and the request
    still names the host."""
    receiver = await Receiver(host="127.0.0.2").start()
    resolver = SteeredResolver(["127.0.0.2"], ["127.0.0.1"])
    egress = await _egress(resolver, webhook_allow_private=True)
    try:
        async with egress.open(
            "POST", f"http://rebind.test:{receiver.port}/hook", egress.webhooks, content=b"{}"
        ) as response:
            assert response.status_code == 200
        assert resolver.asked == ["rebind.test"]  # asked once: nothing resolved it again
        assert egress.backend.tried == [("127.0.0.2", receiver.port)]
        assert receiver.received[0].headers["host"] == f"rebind.test:{receiver.port}"
    finally:
        await egress.aclose()
        await receiver.stop()


async def test_a_public_first_answer_never_leads_to_a_private_connect(receiver: Receiver) -> None:
    """A name that answers a public address to the check and 127.0.0.1 afterwards: the
    connect goes to the public address, never to the receiver. Whether anything answers there
    depends on the machine's network (unreachable on most; a sandbox's proxy may answer every
    address), so either outcome of the request is taken; where it went is what is checked."""
    resolver = SteeredResolver(["93.184.215.14"], ["127.0.0.1"])
    egress = await _egress(resolver, webhook_timeout_s=1.0)
    try:
        try:
            async with egress.open(
                "POST", f"http://rebind.test:{receiver.port}/hook", egress.webhooks, content=b"{}"
            ):
                pass
        except Failed:
            pass  # nothing answers that address from here
        assert resolver.asked == ["rebind.test"]
        assert {address for address, _ in egress.backend.tried} == {"93.184.215.14"}
        assert receiver.received == []
        # and the next attempt is checked again: the private answer is refused before any
        # connect
        with pytest.raises(UrlRefused, match="non-public address"):
            async with egress.open(
                "POST", f"http://rebind.test:{receiver.port}/hook", egress.webhooks, content=b"{}"
            ):
                pass
        assert {address for address, _ in egress.backend.tried} == {"93.184.215.14"}
    finally:
        await egress.aclose()


# --- result fetches -----------------------------------------------------------------------


async def test_a_result_fetch_to_loopback_is_refused_by_default(
    api_factory: Callable[..., Any], database_url: str, receiver: Receiver
) -> None:
    """The job fails with the reason, its hold is released, nothing is fetched, never a 500;
    with CREDITSTREAM_RESULT_FETCH_ALLOW_PRIVATE=1 the same fetch is made."""
    for allow in (False, True):
        api: ApiClient = await api_factory(database_url, result_fetch_allow_private=allow)
        account = f"fetcher-{allow}"
        h = api.server()
        await api.http.post(
            f"/v1/accounts/{account}/grants", headers=h, json={"amount": 100, "reason": "purchase"}
        )
        before = (await api.http.get(f"/v1/accounts/{account}", headers=h)).json()["balance"]
        job = (
            await api.http.post(
                "/v1/jobs",
                headers=h,
                json={"account_id": account, "operation": "audio", "provider": "worker"},
            )
        ).json()["job"]
        done = await api.http.post(
            f"/v1/jobs/{job['job_id']}/result",
            headers=h,
            json={"status": "success", "result_url": receiver.url("/metrics")},
        )
        assert done.status_code == 200, done.text
        answer = (await api.http.get(f"/v1/accounts/{account}", headers=h)).json()
        if allow:
            assert done.json()["job"]["status"] == "success"
            assert [r.path for r in receiver.received] == ["/metrics"]
            continue
        assert done.json()["job"]["status"] == "failed"
        assert "non-public address" in done.json()["job"]["error"]
        assert (answer["balance"], answer["held"]) == (before, 0)  # the hold released
        assert receiver.received == []


async def test_a_redirect_to_an_internal_address_is_refused(receiver: Receiver) -> None:
    """Each hop is checked again: 127.0.0.2 is allowed here (as a public server would be),
    its redirect to the loopback receiver is refused before anything is sent there."""
    redirector = Receiver(
        host="127.0.0.2", status=302, answer_headers={"Location": receiver.url("/metrics")}
    )
    await redirector.start()
    egress = await _egress(SteeredResolver(["127.0.0.2"]))
    rules = Rules(
        "results",
        False,
        "CREDITSTREAM_RESULT_FETCH_ALLOW_PRIVATE",
        5.0,
        3,
        (ipaddress.ip_network("127.0.0.2/32"),),
    )
    try:
        with pytest.raises(UrlRefused, match="non-public address"):
            async with egress.open("GET", redirector.url("/result.png"), rules):
                pass
        assert receiver.received == []
        # the built-in rules: the first hop is refused already
        with pytest.raises(UrlRefused):
            async with egress.open("GET", redirector.url("/result.png"), egress.results):
                pass
    finally:
        await egress.aclose()
        await redirector.stop()


async def test_redirects_are_bounded(receiver: Receiver) -> None:
    receiver.status = 302
    receiver.answer_headers = {"Location": "/again"}
    egress = await _egress(SteeredResolver(["127.0.0.1"]), result_fetch_allow_private=True)
    try:
        with pytest.raises(Failed, match="more than 3 redirects"):
            async with egress.open("GET", receiver.url("/first"), egress.results):
                pass
    finally:
        await egress.aclose()


async def test_webhooks_follow_no_redirect(receiver: Receiver) -> None:
    receiver.status = 307
    receiver.answer_headers = {"Location": f"http://127.0.0.1:{free_port()}/elsewhere"}
    egress = await _egress(SteeredResolver(["127.0.0.1"]), webhook_allow_private=True)
    try:
        async with egress.open("POST", receiver.url(), egress.webhooks, content=b"{}") as response:
            assert response.status_code == 307
        assert len(egress.backend.tried) == 1
    finally:
        await egress.aclose()
