"""boto3 client construction for the AWS Batch backend (timeouts, retry mode, profile, assumed
role, endpoint) and redaction of AWS error text, so that no credential reaches a message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
    RefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, NoCredentialsError

from reaper.backends.base import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, HTTP_POOL_SIZE
from reaper.redact import register_secret

# botocore's Config `max_attempts` counts retries, so a call is made at most 6 times.
MAX_RETRIES = 5
ROLE_SESSION_NAME = "reaper"
_MAX_MESSAGE_CHARS = 300


def client_config(
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_retries: int = MAX_RETRIES,
) -> Config:
    """botocore client settings: explicit timeouts (botocore's default is 60 s each) and the
    `standard` retry mode (backoff with jitter on throttling, 5xx and connection errors), and a
    connection pool as large as the sweep's calls in flight."""
    return Config(
        max_pool_connections=HTTP_POOL_SIZE,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "max_attempts": max_retries},
    )


def make_client(section: Mapping[str, Any], config: Config) -> Any:
    """A boto3 `batch` client for a backend section; `role_arn` adds STS AssumeRole credentials
    that botocore refreshes before they expire."""
    core = botocore.session.Session(profile=section.get("profile"))
    if section.get("region"):
        core.set_config_variable("region", section["region"])
    if section.get("role_arn"):
        core = _assume_role_session(core, str(section["role_arn"]))
    session = boto3.Session(botocore_session=core, region_name=section.get("region"))
    client = session.client("batch", endpoint_url=section.get("endpoint_url"), config=config)
    register_static_secrets(session.get_credentials())  # resolved (and cached) by .client()
    return client


def register_static_secrets(credentials: Credentials | None) -> None:
    """Mask a static secret key and session token in every log line. Refreshable credentials
    (assumed roles, instance metadata) change over time and are not read here: reading them
    may mean a network call; the log redaction patterns cover their shapes."""
    if credentials is None or isinstance(credentials, RefreshableCredentials):
        return
    for value in (credentials.secret_key, credentials.token):
        if value:
            register_secret(value)


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    METHOD = "assume-role"
    CANONICAL_NAME = "reaper-assume-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def _assume_role_session(source: Any, role_arn: str) -> Any:
    """A botocore session whose credentials come from AssumeRole with `source`'s credentials;
    the role is assumed on first use and again shortly before the credentials expire."""
    source_credentials = source.get_credentials()
    if source_credentials is None:
        raise NoCredentialsError()
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=source.create_client,
        source_credentials=source_credentials,
        role_arn=role_arn,
        extra_args={"RoleSessionName": ROLE_SESSION_NAME},
    )
    assumed = DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method=_FixedProvider.METHOD
    )
    session = botocore.session.Session(profile=source.profile)
    region = source.get_config_variable("region")
    if region:
        session.set_config_variable("region", region)
    session.register_component("credential_provider", CredentialResolver([_FixedProvider(assumed)]))
    return session


# -- messages without secrets -------------------------------------------------------------------
_SECRET_PATTERNS = (
    # access key ids (AKIA… long-term, ASIA… temporary, and the other documented prefixes)
    re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA|AGPA|ANPA|ANVA|APKA|AIPA)[A-Z0-9]{12,}\b"),
    # labelled values: Authorization headers, Credential=/Signature= parts, token headers
    re.compile(
        r"(?i)\b(authorization|credential|signature|x-amz-security-token|aws_secret_access_key"
        r"|aws_session_token|secret_?key|session_?token)(\"?\s*[:=]\s*\"?)[^\s,;\"]+"
    ),
    # secret access keys are 40 base64 characters; session tokens are long base64 runs
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
    re.compile(r"[A-Za-z0-9/+=]{80,}"),
)


def redact(text: str) -> str:
    """`text` cut to a sane length with anything shaped like an AWS credential replaced."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_mask, text)
    return text[:_MAX_MESSAGE_CHARS]  # cut after masking, so no secret is left half-cut


def _mask(match: re.Match[str]) -> str:
    if match.lastindex == 2:  # a labelled value: keep the label
        return f"{match[1]}{match[2]}[redacted]"
    return "[redacted]"


def describe_error(exc: BotoCoreError) -> str:
    """`ReadTimeoutError: Read timeout on endpoint URL: …`, redacted."""
    return f"{type(exc).__name__}: {redact(str(exc))}"
