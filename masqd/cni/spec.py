"""The CNI protocol as a plugin sees it: versions, commands, the environment, stdin, results
and the spec's error object. No knowledge of masqd here.

On every pod start: imports nothing that costs start-up time (see masqd.cni.jsonio).
"""

from __future__ import annotations

import os
import sys

from masqd.cni import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Any

# The versions whose configuration we accept, oldest first; the last is what we speak.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# The first spec version that defines each command (a config older than that cannot ask it).
SINCE = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}
# The environment each command needs (CNI_PATH is left out: this plugin executes nothing).
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
}

# Well-known error codes (CNI spec, "Error codes").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
# Plugin-specific codes start at 100.
CHAIN_OUT_OF_SYNC = 100

MAX_STDIN = 4 << 20
"""The largest network configuration read from stdin (a real one, prevResult included, is a
few kilobytes); more is refused rather than read into memory."""


class CniError(Exception):
    """A failure reported to the runtime as the spec's error object on stdout."""

    def __init__(self, code: int, msg: str, details: str = "", version: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.version = version
        """The config's cniVersion, when known: the error object is written in it."""


class Invocation:
    """One call of the plugin: the command, its CNI_* variables and the decoded stdin."""

    __slots__ = ("args", "command", "config", "container_id", "ifname", "netns")

    def __init__(
        self,
        command: str,
        container_id: str,
        netns: str,
        ifname: str,
        args: str,
        config: dict[str, Any],
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.config = config

    @property
    def version(self) -> str:
        """The config's cniVersion (already checked to be one we support)."""
        return str(self.config.get("cniVersion") or "0.1.0")


def command_from(env: Mapping[str, str]) -> str:
    """CNI_COMMAND, checked: missing or unknown is an invalid-environment error."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(
            INVALID_ENV,
            "CNI_COMMAND is not set",
            f"masq-cni is a CNI plugin: set CNI_COMMAND to one of {', '.join(COMMANDS)} "
            "(or run `masq-cni install --help` to install it)",
        )
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENV,
            f"unknown CNI_COMMAND {command!r}",
            f"supported commands: {', '.join(COMMANDS)}",
        )
    return command


def decode_config(data: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """The network configuration on stdin as a JSON object."""
    if not data.strip():
        if allow_empty:
            return {}
        raise CniError(DECODING_FAILURE, "no network configuration on stdin")
    try:
        value = jsonio.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CniError(
            DECODING_FAILURE, "cannot decode the network configuration on stdin", str(e)
        ) from e
    except RecursionError:
        raise CniError(
            DECODING_FAILURE,
            "cannot decode the network configuration on stdin",
            "it is nested too deeply",
        ) from None
    if not isinstance(value, dict):
        raise CniError(
            DECODING_FAILURE,
            "the network configuration on stdin must be a JSON object",
            f"got a JSON {type(value).__name__}",
        )
    return value


def check_version(config: Mapping[str, Any], command: str) -> str:
    """The config's cniVersion if we support it and it allows the command."""
    version = config.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(INVALID_CONFIG, f"cniVersion must be a string, got {version!r}")
    if version not in SUPPORTED_VERSIONS:
        shown = repr(version) if version else "missing (taken as 0.1.0)"
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI version: cniVersion {shown}",
            f"masq-cni supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    since = SINCE.get(command)
    if since and _key(version) < _key(since):
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"config version {version} does not allow {command}",
            f"{command} needs cniVersion {since} or later",
            version,
        )
    return version


def read_invocation(env: Mapping[str, str], stdin: IO[bytes]) -> Invocation:
    """Everything the runtime handed us, validated the way the spec asks."""
    command = command_from(env)
    missing = [name for name in REQUIRED_ENV.get(command, ()) if not env.get(name)]
    if missing:
        raise CniError(
            INVALID_ENV,
            f"{command} needs {', '.join(missing)} set",
            "the runtime must pass CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
        )
    try:
        data = stdin.read(MAX_STDIN + 1)
    except OSError as e:
        raise CniError(
            IO_FAILURE, "cannot read the network configuration from stdin", str(e)
        ) from e
    if len(data) > MAX_STDIN:
        raise CniError(
            DECODING_FAILURE,
            "the network configuration on stdin is too large",
            f"more than {MAX_STDIN >> 20} MiB",
        )
    config = decode_config(data, allow_empty=command == "VERSION")
    if config or command != "VERSION":
        check_version(config, command)
    return Invocation(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=env.get("CNI_ARGS", ""),
        config=config,
    )


def write_json(value: Mapping[str, Any], out: IO[str] | None = None) -> None:
    stream = out or sys.stdout
    stream.write(jsonio.dumps(value))
    stream.write("\n")
    stream.flush()


def error_object(error: CniError, version: str = CURRENT_VERSION) -> dict[str, Any]:
    """The spec's error object; cniVersion is the config's when we support it."""
    version = error.version or version
    obj: dict[str, Any] = {
        "cniVersion": version if version in SUPPORTED_VERSIONS else CURRENT_VERSION,
        "code": error.code,
        "msg": error.msg,
    }
    if error.details:
        obj["details"] = error.details
    return obj


def version_info(config: Mapping[str, Any]) -> dict[str, Any]:
    """The VERSION result."""
    asked = config.get("cniVersion")
    return {
        "cniVersion": asked if asked in SUPPORTED_VERSIONS else CURRENT_VERSION,
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }


def log(message: str) -> None:
    """Unstructured output for the runtime's logs goes to stderr."""
    sys.stderr.write(f"masq-cni[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
