"""A small CNI runtime for tests: runs a conflist's plugins the way the spec tells runtimes to.

- each plugin gets the list's `name` and `cniVersion`, and on ADD the previous plugin's result
  as `prevResult`; DEL runs the plugins in reverse order with the cached ADD result, CHECK in
  order with it;
- plugins are found by `type` in CNI_PATH and run with nothing but the CNI_* variables in
  their environment (what `env -i` gives), inside the node's network namespace
  (`ip netns exec NODE`), so the bridge and its IPAM act on the node the test created, never
  on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@dataclass
class Call:
    """One plugin execution and what came of it."""

    plugin: str
    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


class PluginFailed(AssertionError):
    def __init__(self, call: Call) -> None:
        super().__init__(
            f"{call.plugin} {call.command} exited {call.returncode}: {call.stdout.strip()} "
            f"{call.stderr.strip()}"
        )
        self.call = call


@dataclass
class Runtime:
    node: str
    """The network namespace the plugins run in (the node's)."""
    conflist: dict[str, Any]
    cni_path: list[Path]
    calls: list[Call] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    """The cached final ADD result per container id."""

    def add(self, container_id: str, netns: str, ifname: str = "eth0") -> Any:
        prev = None
        for plugin in self.conflist["plugins"]:
            call = self.run(plugin, "ADD", container_id, netns, ifname, prev)
            if call.returncode != 0:
                raise PluginFailed(call)
            prev = call.output
        self.results[container_id] = prev
        return prev

    def check(self, container_id: str, netns: str, ifname: str = "eth0") -> None:
        prev = self.results[container_id]
        for plugin in self.conflist["plugins"]:
            call = self.run(plugin, "CHECK", container_id, netns, ifname, prev)
            if call.returncode != 0:
                raise PluginFailed(call)

    def delete(self, container_id: str, netns: str | None, ifname: str = "eth0") -> None:
        prev = self.results.get(container_id)
        for plugin in reversed(self.conflist["plugins"]):
            call = self.run(plugin, "DEL", container_id, netns, ifname, prev)
            if call.returncode != 0:
                raise PluginFailed(call)
        self.results.pop(container_id, None)

    def run(
        self,
        plugin: dict[str, Any],
        command: str,
        container_id: str,
        netns: str | None,
        ifname: str,
        prev: Any = None,
    ) -> Call:
        """Execute one plugin of the list with the config the runtime derives for it."""
        config = {
            **plugin,
            "name": self.conflist["name"],
            "cniVersion": self.conflist["cniVersion"],
        }
        if prev is not None:
            config["prevResult"] = prev
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_IFNAME": ifname,
            "CNI_PATH": os.pathsep.join(str(p) for p in self.cni_path),
        }
        if netns:
            env["CNI_NETNS"] = netns
        return self.exec(plugin["type"], env, json.dumps(config))

    def exec(self, plugin_type: str, env: dict[str, str], stdin: str) -> Call:
        executable = self.find(plugin_type)
        argv = ["ip", "netns", "exec", self.node, "env", "-i"]
        argv += [f"{k}={v}" for k, v in env.items()] + [str(executable)]
        start = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        call = Call(
            plugin_type,
            env.get("CNI_COMMAND", ""),
            proc.returncode,
            proc.stdout,
            proc.stderr,
            time.perf_counter() - start,
        )
        self.calls.append(call)
        return call

    def find(self, plugin_type: str) -> Path:
        for directory in self.cni_path:
            candidate = directory / plugin_type
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(f"no plugin {plugin_type!r} in {self.cni_path}")

    def last(self, plugin_type: str, command: str = "ADD") -> Call:
        return [c for c in self.calls if c.plugin == plugin_type and c.command == command][-1]


def bridge_conflist(
    name: str, bridge: str, subnet: str, data_dir: Path, masq_cni: dict[str, Any] | None
) -> dict[str, Any]:
    """The reference bridge with host-local IPAM (no masquerading of its own), then masq-cni."""
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(data_dir),
            },
        }
    ]
    if masq_cni is not None:
        plugins.append({"type": "masq-cni", **masq_cni})
    return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}


def bin_dir(path: Path, masq_cni: Path) -> Path:
    """A CNI bin directory with the reference bridge and host-local, and masq-cni."""
    path.mkdir(parents=True, exist_ok=True)
    for plugin in ("bridge", "host-local"):
        (path / plugin).symlink_to(CNI_BIN / plugin)
    (path / "masq-cni").symlink_to(masq_cni)
    return path
