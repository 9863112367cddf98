"""Submitting to a RunPod worker-comfyui endpoint and polling the job until it ends."""
from __future__ import annotations

import json
import re
import urllib.parse

from .common import EXIT_FAILED, EXIT_USAGE, MAX_TRANSIENT_FAILURES, RUNPOD_API, SIZE_LIMIT, TERMINAL, ClientError, log
from .results import Results, as_text, collect_worker_output, error_text
from .transport import Clock, HTTPFailure, http_json


def endpoint_base(endpoint: str) -> str:
    """https://api.runpod.ai/v2/<id> from an id, a base URL, or a /run or /runsync URL."""
    e = endpoint.strip().rstrip("/")
    if not e:
        raise ClientError("--endpoint is empty", EXIT_USAGE)
    if "://" not in e:
        if re.fullmatch(r"[A-Za-z0-9_-]+", e):
            return RUNPOD_API + e
        raise ClientError(f"--endpoint '{endpoint}' is neither an endpoint id nor a URL", EXIT_USAGE)
    parsed = urllib.parse.urlparse(e)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientError(f"--endpoint '{endpoint}' is not an http(s) URL", EXIT_USAGE)
    for suffix in ("/runsync", "/run"):
        if e.endswith(suffix):
            e = e[: -len(suffix)]
    return e


def _poll_status(base: str, job_id: str, headers: dict, timeout: float, poll: float, clock: Clock,
                 first: dict | None = None) -> dict:
    deadline = clock.now() + timeout
    last_status = (first or {}).get("status")
    failures = 0
    t0 = clock.now()
    url = f"{base}/status/{urllib.parse.quote(job_id, safe='')}"
    while True:
        remaining = deadline - clock.now()
        if remaining <= 0:
            raise ClientError(f"job {job_id} is still {last_status or 'pending'} after {timeout:g}s; it keeps "
                              f"running on RunPod: check it later with GET {url} or cancel it with "
                              f"POST {base}/cancel/{job_id}", EXIT_FAILED)
        clock.sleep(min(poll, max(remaining, 0.0)))
        try:
            resp = http_json("GET", url, headers=headers, timeout=min(60.0, max(remaining, 5.0)))
            failures = 0
        except HTTPFailure as exc:
            if exc.transient and failures + 1 < MAX_TRANSIENT_FAILURES:
                failures += 1
                log(f"safecut client: {exc} (retrying {failures}/{MAX_TRANSIENT_FAILURES - 1})")
                continue
            raise
        if not isinstance(resp, dict):
            raise ClientError(f"GET {url}: unexpected answer {as_text(resp)[:300]}")
        status = str(resp.get("status", "")).upper()
        if status != last_status:
            log(f"safecut client: job {job_id}: {status or '?'} ({clock.now() - t0:.0f}s)")
            last_status = status
        if status in TERMINAL:
            return resp


def run_runpod(payload: dict, endpoint: str, api_key: str, *, sync: bool = False, timeout: float = 600.0,
               poll: float = 2.0, clock: Clock | None = None) -> Results:
    clock = clock or Clock()
    base = endpoint_base(endpoint)
    headers = {"Authorization": f"Bearer {api_key}"}
    route = "runsync" if sync else "run"
    body = json.dumps(payload).encode("utf-8")
    if len(body) > SIZE_LIMIT[route]:
        log(f"safecut client: warning: the request is {len(body) / 1e6:.1f} MB; RunPod accepts at most "
             f"{SIZE_LIMIT[route] / 1e6:.0f} MB on /{route}: send fewer images per request.")
    url = f"{base}/{route}"
    log(f"safecut client: POST {url} ({len(body) / 1e6:.2f} MB, "
         f"{len(payload.get('input', {}).get('images') or [])} image(s))")
    first = http_json("POST", url, payload, headers=headers,
                      timeout=max(30.0, min(timeout, 300.0)) if sync else 60.0)
    if not isinstance(first, dict):
        raise ClientError(f"POST {url}: unexpected answer {as_text(first)[:300]}")
    job_id = str(first.get("id") or "")
    status = str(first.get("status", "")).upper()
    if status in TERMINAL:
        final = first
    else:
        if not job_id:
            raise ClientError(f"POST {url}: no job id in the answer: {as_text(first)[:300]}")
        log(f"safecut client: job {job_id}: {status or 'submitted'}")
        final = _poll_status(base, job_id, headers, timeout, poll, clock, first)
    return results_from_job(final)


def results_from_job(job: dict) -> Results:
    status = str(job.get("status", "")).upper()
    if status == "COMPLETED":
        res = collect_worker_output(job.get("output"))
        if job.get("error"):
            res.errors.insert(0, error_text(job["error"]))
            res.job_failed = True
        return res
    res = Results(job_failed=True)
    output = job.get("output")
    detail = job.get("error") or (output.get("error") if isinstance(output, dict) else None)
    res.errors.append(f"job {job.get('id', '?')} {status or 'ended'}"
                      + (f": {error_text(detail)}" if detail else ""))
    if isinstance(job.get("output"), dict) and job["output"].get("images"):
        partial = collect_worker_output(job["output"])  # keep whatever images a failed job still returned
        res.files, res.urls = partial.files, partial.urls
    return res
