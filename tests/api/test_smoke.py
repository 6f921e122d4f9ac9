"""First contact: the app answers, ingests and reads back on both stores."""

from __future__ import annotations

from stateset_sequencer.testing import kit
from tests.api.conftest import Api


async def test_ingest_and_read_back(api: Api) -> None:
    await api.register_agent()
    events = [kit.event(i) for i in range(3)]
    response = await api.ingest(events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eventsAccepted"] == 3 and body["headSequence"] == 3
    page = await api.client.get(
        "/api/v1/ves/events",
        params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
        headers=api.headers(),
    )
    assert page.status_code == 200, page.text
    assert [e["envelope"]["event_id"] for e in page.json()["events"]] == [
        str(e.event_id) for e in events
    ]
