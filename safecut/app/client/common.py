"""Exit codes, limits and the error type every part of the client shares."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RUNPOD_API = "https://api.runpod.ai/v2/"
LOADER_CLASS = "SafeCutLoadImageBatch"
UPLOADS_INPUT = "uploads"
META_KEY = "safecut"
# RunPod request body limits (research notes, worker-comfyui README): larger bodies are refused.
SIZE_LIMIT = {"run": 10 * 1024 * 1024, "runsync": 20 * 1024 * 1024}
MAX_TRANSIENT_FAILURES = 5  # consecutive poll errors (5xx, 429, network) tolerated before giving up
USER_AGENT = "safecut-client/1"


class ClientError(Exception):
    """An error with a clear one-line message and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
