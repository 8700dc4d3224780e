"""The one client of masqd's control API (`masqd.api.v1`), for masqctl and masq-cni alike.

    from masqd.client import Client          # grpcio: masqctl (masqd.client.api)
    from masqd.client import h2transport     # the standard library only: masq-cni's ADD

Importing this package costs nothing: masq-cni imports `masqd.client.h2transport` on every
pod start, where each millisecond counts (bench/cni_add.py), and a package is initialised
before any of its modules. So the grpcio client's names are looked up in `masqd.client.api`
only when first used.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from masqd.client.api import (
        DEFAULT_TIMEOUT,
        ApiError,
        Client,
        ClientError,
        EventStream,
        Unreachable,
    )

__all__ = ["DEFAULT_TIMEOUT", "ApiError", "Client", "ClientError", "EventStream", "Unreachable"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from masqd.client import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
