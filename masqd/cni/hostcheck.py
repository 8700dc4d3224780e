"""Proving that an installed masq-cni runs on the host, before it is chained.

The plugin runs with the host's own C library, not the one of the container that installs it.
So the installer executes the copy it has just put into the host's CNI bin directory the way
a runtime would (an empty environment, the CNI protocol on stdin), chrooted into the host's
root filesystem (the DaemonSet mounts it read-only at --host-root): the host's dynamic loader
and glibc load it, or say why they cannot. Two invocations: VERSION (the interpreter starts)
and an ADD against a socket that does not exist (the code an ADD runs is there, and passes
prevResult through).

The only module of the installer that runs a command.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

TIMEOUT = 20.0
"""Seconds for each check run: far more than the plugin's start-up, even on a loaded node."""
PREV_RESULT = {"cniVersion": "1.0.0", "ips": []}
CHECKS = (
    ("VERSION", {"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"}),
    (
        "ADD",
        {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "masq-cni-install-check",
            "CNI_NETNS": "/dev/null",
            "CNI_IFNAME": "eth0",
        },
        {
            "cniVersion": "1.0.0",
            "name": "masq-cni-install-check",
            "type": "masq-cni",
            "socket": "/nonexistent/masq-cni-install-check.sock",
            "failurePolicy": "ignore",
            "prevResult": PREV_RESULT,
        },
    ),
)


class CannotRun(Exception):
    """The installed masq-cni does not run on the host; the message says how it failed."""


def host_path(path: Path, host_root: Path) -> str:
    """path (as seen here, inside host_root) as the host sees it."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(host_root))
    except ValueError:
        raise CannotRun(f"{path} is not inside the host root {host_root}") from None
    return "/" + relative.as_posix()


def check_runs(executable: Path, host_root: Path) -> None:
    """Run executable chrooted into host_root as a runtime would; raise CannotRun if it fails.
    host_root "/" runs it in place (the installer runs on the host itself)."""
    argv0 = host_path(executable, host_root)
    in_place = os.path.abspath(host_root) == "/"

    def enter_host() -> None:
        os.chroot(host_root)
        os.chdir("/")

    where = "here" if in_place else f"in the host root {host_root}"
    for command, env, stdin in CHECKS:
        try:
            proc = subprocess.run(
                [argv0],
                input=json.dumps(stdin).encode(),
                env=env,
                capture_output=True,
                timeout=TIMEOUT,
                cwd="/",
                preexec_fn=None if in_place else enter_host,
            )
        except subprocess.TimeoutExpired:
            raise CannotRun(f"{command} {where} did not finish in {TIMEOUT:g}s") from None
        except subprocess.SubprocessError as e:  # the chroot itself failed (no CAP_SYS_CHROOT)
            raise CannotRun(f"cannot enter the host root {host_root}: {e}") from None
        except OSError as e:
            raise CannotRun(f"{command} {where}: cannot execute {argv0}: {e}") from None
        problem = _problem(command, proc)
        if problem:
            raise CannotRun(f"{command} {where} {problem}")


def _problem(command: str, proc: subprocess.CompletedProcess[bytes]) -> str:
    stderr = proc.stderr.decode(errors="replace").strip()
    stdout = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        said = stderr.splitlines()[-3:] or stdout.splitlines()[-3:]
        return f"exited {proc.returncode}: {' / '.join(said) or 'no output'}"
    try:
        answer = json.loads(stdout)
    except ValueError:
        return f"printed no CNI result: {stdout[:200]!r}"
    if command == "VERSION" and "supportedVersions" not in answer:
        return f"printed no supportedVersions: {stdout[:200]!r}"
    if command == "ADD" and answer != PREV_RESULT:
        return f"did not pass prevResult through: {stdout[:200]!r}"
    return ""
