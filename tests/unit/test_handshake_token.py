"""Where a console's token is taken from at the handshake: the Authorization header or the
``access_token`` parameter, one of them. A request that carries more than one token is
refused: which one would count is not the client's to guess (RFC 6750, section 2: one
method per request)."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from c2bus.errors import AuthError
from c2bus.services.gateway.handshake import token_of


def request(path: str = "/", authorization: str | None = None) -> Request:
    headers = Headers()
    if authorization is not None:
        headers["Authorization"] = authorization
    return Request(path, headers)


def test_a_token_in_the_header_or_in_the_query() -> None:
    assert token_of(request(authorization="Bearer abc")) == "abc"
    assert token_of(request("/?access_token=abc")) == "abc"
    assert token_of(request()) is None


@pytest.mark.parametrize(
    "req",
    [
        request("/?access_token=abc", authorization="Bearer abc"),
        request("/?access_token=abc", authorization="Bearer other"),
        request("/?access_token=abc&access_token=other"),
    ],
    ids=["header-and-query-alike", "header-and-query-differ", "query-twice"],
)
def test_more_than_one_token_is_refused(req: Request) -> None:
    with pytest.raises(AuthError, match="more than one token"):
        token_of(req)
