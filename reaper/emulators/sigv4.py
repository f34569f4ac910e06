"""Server-side check of AWS Signature Version 4, for the emulators: the algorithm botocore's
SigV4Auth signs with (botocore/auth.py; AWS "Create a signed AWS API request"): canonical
request → string to sign → HMAC chain over date, region and service."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import quote

from reaper.emulators.base import Request


class AuthError(Exception):
    """A request the service refuses with 403; `code` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<scope>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)"
)


def check_sigv4(
    request: Request, credentials: Mapping[str, str], region: str, service: str
) -> None:
    """Raise AuthError unless `request` is signed with SigV4 by a key in `credentials`."""
    match = _AUTH_RE.fullmatch(request.headers.get("authorization", "").strip())
    if match is None:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    secret = credentials.get(match["key"])
    if secret is None:
        raise AuthError(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    scope = match["scope"].split("/")
    if len(scope) != 4 or scope[1:] != [region, service, "aws4_request"]:
        raise AuthError("InvalidSignatureException", "Credential should be scoped correctly.")
    expected = _signature(request, secret, match["scope"], match["signed"].split(";"))
    if not hmac.compare_digest(expected, match["signature"]):
        raise AuthError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )


def _signature(request: Request, secret: str, scope: str, signed: list[str]) -> str:
    canonical = "\n".join(
        [
            request.method.upper(),
            request.path,  # as sent: already URI-encoded by the client
            _canonical_query(request.query),
            "".join(f"{h}:{' '.join(request.headers.get(h, '').split())}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(request.body).hexdigest(),
        ]
    )
    amz_date = request.headers.get("x-amz-date", "")
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_query(query: Mapping[str, list[str]]) -> str:
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, vs in query.items() for v in vs
    )
    return "&".join(f"{k}={v}" for k, v in pairs)
