import httpx

from tests.fakes.http import Reply


def test_fake_server_records_and_answers(fake_server):
    fake_server.answer = lambda req: Reply(429, {"error": "slow down"}, {"Retry-After": "3"})
    response = httpx.post(fake_server.url + "/x?y=1", json={"a": 1})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert fake_server.requests[0].path == "/x?y=1"
    assert fake_server.bodies() == [{"a": 1}]
