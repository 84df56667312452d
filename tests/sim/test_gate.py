"""What every API request passes: auth, quota headers, 429s, faults; and bad input."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from ..helpers import API_KEY, StartSim, sdk


async def test_every_response_carries_rate_limit_headers(start_sim: StartSim, http: str) -> None:
    async with start_sim({"quota": {"rpm": 600, "window": 1}}, time_scale=1.0) as sim:
        async with sdk(sim, http) as client:
            raw = await client.responses.with_raw_response.create(
                model="m", input="x", background=True
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "600"
            assert raw.headers["x-ratelimit-remaining-requests"] == "540"  # 9 of 10 tokens left
            assert raw.headers["x-ratelimit-reset-requests"].endswith("ms")
            assert raw.headers["x-request-id"].startswith("req_")
            assert "x-ratelimit-limit-tokens" in raw.headers
            with pytest.raises(openai.NotFoundError) as info:
                await client.responses.retrieve("resp_nope")
            assert "x-ratelimit-remaining-requests" in info.value.response.headers


async def test_limit_header_is_in_the_clients_real_minutes(start_sim: StartSim) -> None:
    async with start_sim({"quota": {"rpm": 600}}, time_scale=0.1) as sim, sdk(sim) as client:
        raw = await client.responses.with_raw_response.create(model="m", input="x")
        assert raw.headers["x-ratelimit-limit-requests"] == "6000"


async def test_over_quota_is_a_429_with_openai_body_and_retry_after(start_sim: StartSim) -> None:
    async with start_sim({"quota": {"rpm": 120, "window": 1}}, time_scale=1.0) as sim:
        async with sdk(sim) as client:
            await client.responses.create(model="m", input="x")
            await client.responses.create(model="m", input="x")
            with pytest.raises(openai.RateLimitError) as info:
                await client.responses.create(model="m", input="x")
    err = info.value
    assert err.status_code == 429
    assert err.body == {
        "message": err.body["message"],  # type: ignore[index]
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "on requests per min (RPM): Limit 120" in err.message
    retry_ms = int(err.response.headers["retry-after-ms"])
    assert 0 < retry_ms <= 500
    assert err.response.headers["retry-after"] == "1"
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["statuses"]["429"] == 1
    assert stats["requests"]["responses.create"] == 3


async def test_sub_minute_window_paces_a_burst(start_sim: StartSim) -> None:
    """A 600 RPM account with a 1 s window takes 10 at once, not 600."""
    async with start_sim({"quota": {"rpm": 600, "window": 1}}, time_scale=1.0) as sim:
        async with sdk(sim) as client:
            results = await asyncio.gather(
                *(client.responses.create(model="m", input="x") for _ in range(30)),
                return_exceptions=True,
            )
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert 15 <= len(refused) <= 20  # ~10 admitted at once, a few more refill while they run
    assert sim.stats()["peak_window"]["peak"] == 30


async def test_sdk_retries_honour_retry_after_and_are_counted(start_sim: StartSim) -> None:
    async with start_sim({"quota": {"rpm": 600, "window": 0.1}}, time_scale=1.0) as sim:
        async with sdk(sim, max_retries=3) as client:
            await asyncio.gather(*(client.responses.create(model="m", input="x") for _ in range(3)))
    stats = sim.stats()
    assert stats["requests"]["responses.create"] == 3 + stats["rate_limited"]
    assert stats["rate_limited"] >= 1


async def test_storm_answers_429_whatever_the_quota(start_sim: StartSim) -> None:
    scenario = {"faults": {"storms": {"every": 1000, "duration": 500}}}
    async with start_sim(scenario, time_scale=1.0) as sim, sdk(sim) as client:
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(model="m", input="x")
    assert sim.stats()["storm_limited"] == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "You didn't provide an API key"),
        ("sk-wrong-key-9999", "Incorrect API key provided: sk-***9999"),
    ],
)
async def test_bad_key_is_a_401_with_openai_body(
    start_sim: StartSim, key: str, message: str
) -> None:
    async with start_sim(api_key=API_KEY) as sim, httpx2.AsyncClient() as http:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        resp = await http.get(f"{sim.base_url}/responses/resp_x", headers=headers)
    assert resp.status_code == 401
    body = resp.json()["error"]
    assert message in body["message"]
    assert body["type"] == "invalid_request_error"
    assert sim.stats()["unauthorized"] == 1


async def test_right_key_is_accepted_when_one_is_set(start_sim: StartSim) -> None:
    async with start_sim(api_key=API_KEY) as sim, sdk(sim) as client:
        assert (await client.responses.create(model="m", input="x")).status == "completed"
        async with sdk(sim, api_key="sk-other-0000") as other:
            with pytest.raises(openai.AuthenticationError):
                await other.responses.create(model="m", input="x")


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("error_500", openai.InternalServerError),
        ("error_503", openai.InternalServerError),
        ("drop", openai.APIConnectionError),
    ],
)
async def test_injected_faults_reach_the_sdk(
    start_sim: StartSim, http: str, fault: str, error: type[Exception]
) -> None:
    async with start_sim({"faults": {fault: 1.0}}, time_scale=1.0) as sim, sdk(sim, http) as client:
        with pytest.raises(error):
            await client.responses.create(model="m", input="x", background=True)
    stats = sim.stats()
    assert stats["faults"] == {fault: 1}
    # 5xx happen before the work, a drop after it: the client cannot tell whether it happened
    assert stats["responses"]["total"] == (1 if fault == "drop" else 0)


async def test_fault_fractions_are_roughly_honoured(start_sim: StartSim) -> None:
    async with start_sim({"faults": {"error_500": 0.2}}, time_scale=1.0) as sim, sdk(sim) as client:
        results = await asyncio.gather(
            *(client.responses.create(model="m", input="x") for _ in range(200)),
            return_exceptions=True,
        )
    failures = sum(isinstance(r, openai.InternalServerError) for r in results)
    assert 20 <= failures <= 65
    assert sim.stats()["faults"]["error_500"] == failures


async def test_slow_responses_are_delayed(start_sim: StartSim) -> None:
    scenario = {"faults": {"slow": 1.0, "slow_delay": 0.2}}
    async with start_sim(scenario, time_scale=1.0) as sim, sdk(sim) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await client.responses.create(model="m", input="x")
        assert loop.time() - t0 >= 0.2
    assert sim.stats()["faults"]["slow"] == 1


async def test_stalled_runs_stay_queued(start_sim: StartSim) -> None:
    scenario = {"stalls": {"probability": 1.0, "queued": 10_000}}
    async with start_sim(scenario, time_scale=0.01) as sim, sdk(sim) as client:
        resp = await client.responses.create(model="m", input="x", background=True)
        await asyncio.sleep(0.2)  # 20 s of scenario time: any normal run would have finished
        assert (await client.responses.retrieve(resp.id)).status == "queued"


async def test_poll_after_header_on_retrieves_only(start_sim: StartSim) -> None:
    async with start_sim({"poll_after_ms": 2000}, time_scale=0.5) as sim, sdk(sim) as client:
        created = await client.responses.with_raw_response.create(
            model="m", input="x", background=True
        )
        assert "openai-poll-after-ms" not in created.headers
        raw = await client.responses.with_raw_response.retrieve(created.parse().id)
        assert raw.headers["openai-poll-after-ms"] == "1000"  # real ms: scaled with time


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/responses", b"{not json", 400, "could not parse the JSON body"),
        ("POST", "/responses", b"[1,2]", 400, "must be a JSON object"),
        ("POST", "/responses", b"\xff\xfe", 400, "could not parse"),
        ("POST", "/responses", b'{"model": "m", "input": 5}', 400, "'input'"),
        ("POST", "/responses", b'{"model": "m", "tools": "x"}', 400, "'tools'"),
        ("PUT", "/responses", b"{}", 405, "Invalid method for URL (PUT /v1/responses)"),
        ("GET", "/nothing/here", b"", 404, "Invalid URL (GET /v1/nothing/here)"),
        ("GET", "/threads/thread_x/messages?limit=abc", b"", 404, "No thread found"),
        ("POST", "/threads", b'{"messages": [{"role": "robot", "content": "x"}]}', 400, "role"),
        ("POST", "/threads", b'{"messages": [{"role": "user"}]}', 400, "content"),
        ("POST", "/threads/runs", b"{}", 400, "assistant_id"),
    ],
)
async def test_bad_input_gets_an_openai_shaped_error(
    start_sim: StartSim, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    async with start_sim() as sim, httpx2.AsyncClient() as http:
        resp = await http.request(
            method,
            sim.base_url + path,
            content=body,
            headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        )
    assert resp.status_code == status
    error = resp.json()["error"]
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_messages_limit_out_of_range_is_a_400(start_sim: StartSim) -> None:
    async with start_sim() as sim, sdk(sim) as client:
        thread = await client.beta.threads.create()
        with pytest.raises(openai.BadRequestError, match="limit"):
            await client.beta.threads.messages.list(thread.id, limit=500)


async def test_stats_and_reset_are_out_of_band(start_sim: StartSim) -> None:
    async with start_sim({"quota": {"rpm": 60, "window": 1}}, time_scale=1.0) as sim:
        async with sdk(sim) as client, httpx2.AsyncClient() as http:
            await client.responses.create(model="m", input="x", background=True)
            for _ in range(5):  # never rate limited, never counted
                stats = (await http.get(f"{sim.url}/_sim/stats?runs=1")).json()
            assert stats["requests_total"] == 1
            assert stats["responses"]["total"] == 1
            assert stats["responses"]["items"][0]["retrieves"] == 0
            assert stats["peak_window"] == {"seconds": 60.0, "peak": 1, "quota": 60.0}
            reset = await http.post(f"{sim.url}/_sim/reset", json={"scenario": "tight"})
            assert reset.json() == {"reset": True, "scenario": "tight"}
            stats = (await http.get(f"{sim.url}/_sim/stats")).json()
            assert stats["requests_total"] == 0
            assert stats["scenario"] == "tight"
            bad = await http.post(f"{sim.url}/_sim/reset", json={"scenario": {"quota": {"x": 1}}})
            assert bad.status_code == 400
            assert "unknown key 'quota.x'" in bad.text
