"""An experiment, not reaper: Sutro's calls made through a urllib3 connection pool instead of a
requests session, to measure what taking requests off that hot path would buy a sweep.

    PYTHONPATH=benchmarks/experiments/sutro_urllib3 python benchmarks/bench_sweep.py \
        --runs 5 --skip-serial --no-write

Python imports `sitecustomize` at start-up from the path, so every process of the benchmark (the
measured `reaper run --once` included: its environment keeps PYTHONPATH) replaces
`SutroBackend._send` with the function below. It keeps the same request (path, query, headers,
timeouts) and the answer's status, headers and JSON, and drops what the benchmark's emulator does
not need: proxies, a CA bundle, redirects, cookies, and the mapping of transport errors to
BackendError. Figures: benchmarks/results.md, "Why the sweep targets are missed"."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from reaper.backends import sutro


class _Answer:
    """The parts of a requests.Response that SutroBackend reads."""

    __slots__ = ("_data", "headers", "status_code")

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self.status_code, self.headers, self._data = (
            response.status,
            response.headers,
            response.data,
        )

    def json(self) -> Any:
        return json.loads(self._data)

    @property
    def text(self) -> str:
        return self._data.decode("utf-8", "replace")


def _send(self: Any, method: str, path: str, params: dict[str, str] | None) -> _Answer:
    pool = self.__dict__.get("_pool")
    if pool is None:
        pool = self._pool = urllib3.PoolManager(maxsize=20).connection_from_url(self._base)
    query = "?" + urlencode(params) if params else ""
    timeout = urllib3.Timeout(connect=self._timeout[0], read=self._timeout[1])
    response = pool.urlopen(method, urlsplit(self._base).path + path + query,
                            headers=self._headers, timeout=timeout, retries=False,
                            redirect=False)  # fmt: skip
    answer = _Answer(response)
    self.server_clock.observe(answer.headers.get("Date"))
    return answer


sutro.SutroBackend._send = _send  # type: ignore[method-assign,assignment]
