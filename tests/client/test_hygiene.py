"""Secrets and tokens never show up in logs, reprs or error messages."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support.proxy import TcpProxy

from rainbow_aio import (
    RainbowClient,
    RainbowError,
    RainbowServer,
    RetryPolicy,
    TLSConfig,
)

from .conftest import FAST_RETRY, LogWatch

REG_SECRET = "registration-secret-4f1c"
WRONG = "wrong-secret-9d2e"


async def test_no_secret_in_logs_reprs_or_errors(
    caplog: pytest.LogCaptureFixture, log_watch: LogWatch
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    def keep(err: RainbowError) -> None:
        texts.extend([str(err), repr(err), err.message, str(err.details)])

    async with (
        RainbowServer("127.0.0.1:0", secret=REG_SECRET) as server,
        TcpProxy("127.0.0.1", server.port) as proxy,
        RainbowClient(proxy.address, retry=FAST_RETRY, connect_timeout=0.3) as client,
    ):
        reg = await client.register("alpha", REG_SECRET)
        secrets = [REG_SECRET, WRONG, reg.token, reg.secret]
        texts += [repr(reg), str(reg), repr(client)]
        job_id = await client.submit_job("alpha", reg.token, "echo hi")
        assert job_id is not None
        await client.request_jobs("alpha", reg.secret)
        await client.accept_jobs("alpha", reg.secret, [job_id])
        # every kind of refusal, with credentials in the request
        failing = [
            client.register("alpha", REG_SECRET),  # exists
            client.register("beta", WRONG),
            client.submit_job("alpha", WRONG, "x"),
            client.request_jobs("alpha", WRONG),
            client.accept_jobs("alpha", WRONG, [1]),
            client.accept_jobs("alpha", reg.secret, []),
            client.submit_job("alpha", reg.token, "", name=reg.secret),
        ]
        for call in failing:
            with pytest.raises(RainbowError) as info:
                await call
            keep(info.value)
        # retries are logged: make some happen, then fail for good
        await proxy.refuse()
        proxy.drop_all()
        request = asyncio.create_task(client.request_jobs("alpha", reg.secret))
        await log_watch.wait_for_retries(1)
        await proxy.accept()
        await request
        await proxy.refuse()
        proxy.drop_all()
        with pytest.raises(RainbowError) as info:
            await client.submit_job("alpha", reg.token, "x", timeout=RetryPolicy().initial_backoff)
        keep(info.value)
    texts.append(caplog.text)
    texts.extend(r.getMessage() for r in log_watch.records)
    assert log_watch.retries(), "the retries were logged"
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_tls_config_repr_hides_the_key() -> None:
    config = TLSConfig(
        root_certificates=b"-----BEGIN CERTIFICATE-----ca",
        certificate_chain=b"-----BEGIN CERTIFICATE-----leaf",
        private_key=b"-----BEGIN PRIVATE KEY-----topsecret",
    )
    assert "topsecret" not in repr(config)
    assert "topsecret" not in str(config)
    assert "private_key=<hidden>" in repr(config)
