"""Every error the service's own code raises, in one place; `service/api/errors.py` turns each
into its HTTP answer (status, code, Retry-After)."""

from __future__ import annotations


class InvalidInput(ValueError):
    """A request the schema accepted, but the model cannot take (422, naming the field)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ModelNotReady(Exception):
    """The model exists but is not loaded (still loading, or failed to load): 503."""


class DeviceUnavailable(RuntimeError):
    """`device=cuda` was asked for, but the session did not come up on CUDA (the model stays not ready)."""


class ModelsDirMissing(RuntimeError):
    """The models directory does not exist: the server does not start."""


class QueueFull(Exception):
    """The model's queue cannot take these items now; the client should retry later (503)."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientBusy(QueueFull):
    """This client already has as much work in flight as one client may (429)."""


class TooMuchWork(Exception):
    """This request alone would not finish before the request deadline, however idle the
    model is (422: send less, retrying will not help)."""


class RequestTimeout(Exception):
    """The request was not answered within `request_timeout_s` (503)."""


class ClientDisconnected(Exception):
    """The client went away before its answer was ready (499, for the log)."""


class ShuttingDown(Exception):
    """The server is stopping and this request's work could not finish within the grace period (503)."""


class Music21Timeout(Exception):
    """A music21 call ran past its time limit and was stopped (422: the tune is too complex)."""


class Music21Unavailable(Exception):
    """The music21 workers are not running (starting or shutting down): 503."""
