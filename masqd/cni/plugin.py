"""The plugin's commands: what ADD, DEL, CHECK, VERSION, STATUS and GC do for masqd.

On every pod start: the standard library's costly modules (typing, dataclasses, json, re,
enum, socket) are not imported on the way through ADD; tests/kernel/test_cni.py holds it to that.
"""

from __future__ import annotations

import sys

from masqd.cni import spec
from masqd.cni.config import FAIL, PluginConfig, plugin_config
from masqd.cni.spec import CniError, Invocation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import IO, Any

    Result = dict[str, Any] | None


def add(inv: Invocation, started: float) -> Result:
    """Resync masqd and wait for it, then pass the previous plugin's result on unchanged."""
    config = plugin_config(inv.config)
    prev = _prev_result(inv)
    from masqd.client.errors import ClientError
    from masqd.client.light import Client

    try:
        with Client(config.socket, started + config.timeout) as client:
            client.resync()
    except ClientError as e:
        _tolerate(e, config, inv)
    return prev


def delete(inv: Invocation, started: float) -> Result:
    """Nothing to undo: masqd's rules are per node, not per pod. Always succeeds."""
    return None


def check(inv: Invocation, started: float) -> Result:
    """Fail when masqd reports a family's chain out of sync, after one resync to converge."""
    config = plugin_config(inv.config)
    _prev_result(inv)
    from masqd.client.errors import ClientError
    from masqd.client.light import Client, FamilyState

    def out_of_sync(states: list[FamilyState]) -> list[FamilyState]:
        return [s for s in states if not s.in_sync]

    note = ""
    try:
        with Client(config.socket, started + config.timeout) as client:
            bad = out_of_sync(client.rules())
            if bad:
                try:
                    client.resync()
                    bad = out_of_sync(client.rules())
                except ClientError as e:
                    note = f" (a resync did not repair it: {e})"
    except ClientError as e:
        _tolerate(e, config, inv)
        return None
    if bad:
        raise CniError(
            spec.CHAIN_OUT_OF_SYNC,
            "masqd reports the masquerade chain out of sync",
            "; ".join(f"{s.family}: {s.problem}" for s in bad) + note,
        )
    return None


def version(inv: Invocation, started: float) -> Result:
    return spec.version_info(inv.config)


def status(inv: Invocation, started: float) -> Result:
    """Ready when ADD would succeed: masqd answers, or failurePolicy lets ADD go on without it."""
    config = plugin_config(inv.config)
    from masqd.client.errors import ClientError
    from masqd.client.light import Client

    try:
        with Client(config.socket, started + config.timeout) as client:
            client.ping()
    except ClientError as e:
        if config.failure_policy == FAIL:
            raise CniError(
                spec.NOT_AVAILABLE,
                "masqd is not reachable",
                f"{e} (failurePolicy is fail, so ADD would fail)",
            ) from e
        spec.log(f"STATUS: {e}; ready anyway: failurePolicy is ignore, ADD passes through")
    return None


def gc(inv: Invocation, started: float) -> Result:
    """masq-cni keeps no state per attachment, so there is nothing to collect."""
    return None


HANDLERS: dict[str, Callable[[Invocation, float], Result]] = {
    "ADD": add,
    "DEL": delete,
    "CHECK": check,
    "VERSION": version,
    "STATUS": status,
    "GC": gc,
}


def run(env: Mapping[str, str], stdin: IO[bytes], stdout: IO[str], started: float) -> int:
    """Serve one invocation: a result or nothing on success (exit 0), the spec's error object
    on stdout otherwise (exit 1)."""
    version = spec.CURRENT_VERSION
    try:
        inv = spec.read_invocation(env, stdin)
        version = inv.version if inv.config else version
        result = HANDLERS[inv.command](inv, started)
    except CniError as e:
        spec.log(f"error {e.code}: {e.msg}" + (f": {e.details}" if e.details else ""))
        spec.write_json(spec.error_object(e, version), stdout)
        return 1
    except Exception as e:  # a bug: still answer the runtime in the spec's shape
        import traceback  # not at the top: it costs ~30 ms of start-up, on every pod start

        traceback.print_exc(file=sys.stderr)
        error = CniError(999, "masq-cni failed unexpectedly", f"{type(e).__name__}: {e}")
        spec.write_json(spec.error_object(error, version), stdout)
        return 1
    if result is not None:
        spec.write_json(result, stdout)
    return 0


def _prev_result(inv: Invocation) -> dict[str, Any]:
    prev = inv.config.get("prevResult")
    if prev is None:
        raise CniError(
            spec.INVALID_CONFIG,
            "prevResult is missing: masq-cni is a chained plugin",
            "list masq-cni after the plugin that sets up the pod network in a .conflist",
        )
    if not isinstance(prev, dict):
        raise CniError(spec.INVALID_CONFIG, f"prevResult must be a JSON object, got {prev!r}")
    return prev


def _tolerate(error: Exception, config: PluginConfig, inv: Invocation) -> None:
    """Apply failurePolicy to masqd being unreachable, too slow or failing its sync."""
    from masqd.client.errors import Unreachable

    if config.failure_policy == FAIL:
        what = "unreachable or too slow" if isinstance(error, Unreachable) else "failing"
        raise CniError(
            spec.TRY_AGAIN_LATER,
            f"masqd is {what}; try again later",
            f"{error} (failurePolicy: fail)",
        ) from error
    spec.log(f"{inv.command} {inv.container_id}: {error}; going on because failurePolicy is ignore")
