"""The one client of masqd's control API (`masqd.api.v1`), for masqctl and masq-cni alike.

Two paths to the same calls, sharing one set of errors (`errors.py`):

- `Client` (`api.py`): grpcio and the generated messages: every call, Watch's stream too;
  what masqctl uses.
- `light.Client` (`light.py`): the few unary calls masq-cni makes, over `h2transport.py`
  (gRPC over HTTP/2 with the standard library, `hpack.py` for its headers) with the messages
  of `wire.py` (protobuf's wire format by hand): no grpcio, no protobuf, because masq-cni runs
  on every pod start and each millisecond counts (bench/cni_add.py).

Importing this package costs nothing: a package is initialised before any of its modules, so
the grpcio path's names are looked up in `api.py` only when first used.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from masqd.client.api import DEFAULT_TIMEOUT, Client, EventStream
    from masqd.client.errors import ApiError, ClientError, SyncFailed, Unreachable

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiError",
    "Client",
    "ClientError",
    "EventStream",
    "SyncFailed",
    "Unreachable",
]
_API = ("DEFAULT_TIMEOUT", "Client", "EventStream")


def __getattr__(name: str) -> object:
    if name in _API:
        from masqd.client import api

        return getattr(api, name)
    if name in __all__:
        from masqd.client import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
