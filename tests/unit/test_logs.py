"""The summarized log line for events that come by the hundred (requests refused for overload)."""

import asyncio
import logging

import pytest

from bws import logs
from bws.logs import CountedEvents


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def test_the_first_event_is_logged_at_once_and_the_rest_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    events = CountedEvents(logging.getLogger("test"), "refused", interval=0.05)
    for kind in ["upload", "enrollment", "upload", "upload"]:
        events.add(kind)
    assert messages(caplog) == ["refused: upload"]  # one line, not four
    await asyncio.sleep(0.08)
    assert messages(caplog)[1:] == ["refused in the last 0.05 s: 1 enrollment, 2 upload"]
    await asyncio.sleep(0.08)  # a quiet interval ends the summaries ...
    events.add("verification")  # ... so the next event is said at once again
    assert messages(caplog)[2:] == ["refused: verification"]
    events.close()


async def test_closing_says_what_is_still_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    events = CountedEvents(logging.getLogger("test"), "refused", interval=60)
    events.add("upload")
    events.add("upload")
    events.close()
    assert messages(caplog) == ["refused: upload", "refused: 1 upload more"]


@pytest.mark.parametrize(("path", "expected"), [
    ("/uui?access_token=eyJ.abc.def&return_url=https%3A%2F%2Fa.example%2Fb&state=s",
     "/uui?access_token=[redacted]&return_url=https%3A%2F%2Fa.example%2Fb&state=s"),
    ("/extension/result?ACCESS_TOKEN=x", "/extension/result?ACCESS_TOKEN=[redacted]"),
    ("/extension/isenrolled?bcid=bws.1.2", "/extension/isenrolled?bcid=bws.1.2"),
    ("/livez", "/livez"),
])
def test_secret_query_values_are_redacted(path: str, expected: str) -> None:
    assert logs.redact_query(path) == expected
