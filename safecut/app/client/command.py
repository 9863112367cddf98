"""``python -m safecut client``: the command line."""
from __future__ import annotations

import os
import sys

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ClientError, log
from .local import run_local
from .payload import apply_images, load_payload
from .results import save_and_report
from .runpod import run_runpod

HEADER = "file\tverdict\tdecided_by\tp_unsafe\tcaption"


def cmd_client(a) -> int:
    try:
        payload = load_payload(a.payload)
        if a.images:
            payload = apply_images(payload, a.images)
        if a.timeout <= 0 or a.poll <= 0:
            raise ClientError("--timeout and --poll must be positive", EXIT_USAGE)
        if a.local:
            res = run_local(payload, a.local, timeout=a.timeout, poll=a.poll)
        else:
            key = a.api_key if a.api_key is not None else os.environ.get("RUNPOD_API_KEY", "")
            if not key:
                raise ClientError("no API key: pass --api-key or set RUNPOD_API_KEY", EXIT_USAGE)
            res = run_runpod(payload, a.endpoint, key, sync=a.sync, timeout=a.timeout, poll=a.poll)
    except ClientError as exc:
        log(f"safecut client: {exc}")
        return exc.code
    except KeyboardInterrupt:
        log("safecut client: interrupted (a RunPod job keeps running; see its id above)")
        return EXIT_FAILED
    lines, file_errors = save_and_report(res, a.out)
    if lines:
        print(HEADER)
        for ln in lines:
            print(ln.text())
    sys.stdout.flush()
    for e in res.errors + file_errors:
        log(f"safecut client: error: {e}")
    saved = sum(1 for _ in res.files)
    log(f"safecut client: {saved} file(s) saved to {os.path.abspath(a.out)}"
         + (f", {len(res.urls)} on S3" if res.urls else ""))
    failed = res.job_failed or res.errors or file_errors or any(ln.error for ln in lines)
    return EXIT_FAILED if failed else EXIT_OK


def add_cli(subparsers) -> None:
    c = subparsers.add_parser(
        "client", help="send a workflow to a RunPod worker-comfyui endpoint (or a local ComfyUI) and print verdicts",
        description="Submit PAYLOAD (a RunPod payload or an API-format workflow) to a worker-comfyui endpoint, "
                    "wait for it, save the returned files into --out and print one line per image: "
                    "file, verdict, decided_by, p_unsafe, caption (tab-separated). Exit 0: all done; 1: the job "
                    "failed or an image errored; 2: usage.")
    c.add_argument("payload", help="JSON file: {\"input\": {\"workflow\": …, \"images\": …}} or an API workflow")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="https://api.runpod.ai/v2/<ENDPOINT_ID> (or just the id)")
    where.add_argument("--local", metavar="URL",
                       help="run against a ComfyUI server instead, e.g. http://127.0.0.1:8188")
    c.add_argument("--images", nargs="+", metavar="IMG",
                   help="local images to send (replace same-name payload images; the Load Image Batch "
                        "'uploads' widget is set to their names)")
    c.add_argument("--api-key", default=None, help="RunPod API key (default: $RUNPOD_API_KEY)")
    c.add_argument("--sync", action="store_true", help="use /runsync (falls back to polling if it is not done)")
    c.add_argument("--out", default="safecut-results", help="folder for the returned files (default: %(default)s)")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default: 600)")
    c.add_argument("--poll", type=float, default=2.0, help="seconds between status polls (default: 2)")
    c.set_defaults(func=cmd_client)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m safecut")
    add_cli(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return a.func(a)
