"""``python -m safecut client``: send an API-format workflow to a RunPod worker-comfyui endpoint (or straight
to a ComfyUI server with ``--local``), save the returned files and print SafeCut's verdict for each image.

worker-comfyui returns only the files that output nodes list under ``ui.images`` (as
``{"filename", "type": "base64", "data"}``, or ``"type": "s3_url"`` when the endpoint uploads to a bucket); text
outputs are dropped. SafeCut therefore carries its verdicts in the files themselves: every cutout PNG has the
verdict JSON in a PNG text chunk named ``safecut``, and the save node also returns ``<prefix>_report.json``.

Standard library + PIL only (PIL is needed only to read the PNG metadata). Exit codes: 0 everything done,
1 the job failed or any image errored, 2 usage (bad arguments, unreadable payload, missing API key).

Parts: payload (building the request), transport (HTTP), runpod / local (submitting and waiting), results
(decoding the returned files and their verdicts), command (the command line). The names below are its API.
"""
from __future__ import annotations

from .command import HEADER, add_cli, cmd_client, main
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, LOADER_CLASS, META_KEY, UPLOADS_INPUT, ClientError
from .local import run_local
from .payload import apply_images, encode_image, load_payload, make_payload, set_uploads
from .results import Line, Results, collect_worker_output, line_from, read_png_verdict, report_entries, save_and_report
from .runpod import endpoint_base, results_from_job, run_runpod
from .transport import Clock, HTTPFailure, http_json, http_request

__all__ = ["HEADER", "add_cli", "cmd_client", "main", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "LOADER_CLASS",
           "META_KEY", "UPLOADS_INPUT", "ClientError", "run_local", "apply_images", "encode_image", "load_payload",
           "make_payload", "set_uploads", "Line", "Results", "collect_worker_output", "line_from", "read_png_verdict",
           "report_entries", "save_and_report", "endpoint_base", "results_from_job", "run_runpod", "Clock",
           "HTTPFailure", "http_json", "http_request"]
