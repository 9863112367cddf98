"""Errors a user can act on. Each message names the input and says what to do."""


class SafeCutError(Exception):
    """Base class: message is meant for the user as-is."""

    def __str__(self) -> str:  # OSError subclasses would otherwise format their args as errno/filename
        return getattr(self, "message", None) or super().__str__()


class MissingDependencyError(SafeCutError, ImportError):
    def __init__(self, package: str, purpose: str, install: str, missing: str = ""):
        """``missing``: the module that really failed when it is not the package itself (the package is
        installed, one of its own dependencies is not)."""
        self.package = package
        if missing:
            msg = (f"SafeCut needs the Python package '{package}' for {purpose}: it is installed, but importing it "
                   f"failed because its dependency '{missing}' is missing. Install it into the Python that runs "
                   f"ComfyUI: pip install {missing.split('.')[0]}")
        else:
            msg = (f"SafeCut needs the Python package '{package}' for {purpose}, and it is not installed. "
                   f"Install it into the Python that runs ComfyUI: {install}")
        super().__init__(msg)


class ModelNotFoundError(SafeCutError, FileNotFoundError):
    def __init__(self, filename: str, folders, fetch_command: str | None, hint: str = ""):
        self.filename = filename
        self.folders = list(folders)
        self.fetch_command = fetch_command
        where = "\n".join(f"  - {f}" for f in self.folders) or "  (no model folder is configured)"
        msg = f"Model file '{filename}' was not found. Searched:\n{where}\n"
        if hint:
            msg += hint.rstrip() + "\n"
        if fetch_command:
            msg += f"Fetch it with: {fetch_command}"
        else:
            msg += "Place the file in one of the folders above."
        self.message = msg
        super().__init__(msg)


class ChecksumError(SafeCutError):
    def __init__(self, path, expected: str, actual: str, what: str = "sha256"):
        if what == "size":
            detail = f"it has {actual} bytes, the registry says {expected} (truncated or a different file)"
        else:
            detail = f"sha256 {actual[:16]}… does not match the registry's {expected[:16]}…"
        super().__init__(f"Model file '{path}' is damaged or not the expected file: {detail}. "
                         f"Delete it and fetch it again.")


class DeviceUnavailableError(SafeCutError, RuntimeError):
    pass


class BadInputError(SafeCutError, ValueError):
    pass


class DeviceOutOfMemoryError(SafeCutError, MemoryError):
    """A model ran out of device (or host) memory; the message says what to lower."""
