"""HTTP for the client: requests with clear failures, JSON, multipart uploads, an injectable clock."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .common import EXIT_FAILED, USER_AGENT, ClientError


class HTTPFailure(ClientError):
    def __init__(self, method: str, url: str, status: int | None, body: str, hint: str = ""):
        shown = body.strip().replace("\n", " ")
        if len(shown) > 2000:
            shown = shown[:2000] + "…"
        what = f"HTTP {status}" if status is not None else "no answer"
        msg = f"{method} {url}: {what}" + (f": {shown}" if shown else "") + (f" ({hint})" if hint else "")
        super().__init__(msg, EXIT_FAILED)
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def http_request(method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = 60.0) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body). Raises HTTPFailure for HTTP errors and network errors."""
    hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (user-given endpoint)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read().decode("utf-8", "replace")
        except Exception:
            body = ""
        hint = {401: "check --api-key / RUNPOD_API_KEY", 403: "the API key may lack access to this endpoint",
                404: "check the endpoint id / URL", 413: "request too large: send fewer or smaller images"}
        raise HTTPFailure(method, url, exc.code, body, hint.get(exc.code, "")) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
        reason = getattr(exc, "reason", exc)
        raise HTTPFailure(method, url, None, f"{type(reason).__name__}: {reason}") from None


def http_json(method: str, url: str, payload: Any = None, *, headers: dict[str, str] | None = None,
              timeout: float = 60.0) -> Any:
    data = None
    hdrs = {"Accept": "application/json", **(headers or {})}
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    status, body = http_request(method, url, data=data, headers=hdrs, timeout=timeout)
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPFailure(method, url, status, body[:500].decode("utf-8", "replace"),
                          "the answer is not JSON") from None


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """multipart/form-data body and its Content-Type."""
    boundary = "----safecut" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode("utf-8")
    for name, (filename, blob, ctype) in files.items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{safe}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode("utf-8")
        out += blob + b"\r\n"
    out += f"--{boundary}--\r\n".encode("utf-8")
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@dataclass
class Clock:
    """Time source for the waits (injectable for tests)."""
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.monotonic
