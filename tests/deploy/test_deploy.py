"""The Helm chart, the rendered manifests and the Dockerfile, checked with the tools operators use.

The chart is rendered by Helm's own engine (helm-python-sdk), every object is validated against
the Kubernetes 1.32 schemas in strict mode, `kubectl kustomize deploy/` must build, and hadolint
must pass on the Dockerfile. None of this needs a cluster or the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "cce-ip-masq-agent"
RENDERED = DEPLOY / "cce-ip-masq-agent.yaml"
KUBE_VERSION = "1.32.0"
IN_CI = os.environ.get("CI") == "true"

# SPEC §7: CCE's default without its VPC-specific range.
DEFAULT_CONFIG = {
    "nonMasqueradeCIDRs": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    "masqOutBound": True,
    "masqOutBoundIPv6": True,
    "masqLinkLocal": False,
    "masqLinkLocalIPv6": False,
    "resyncInterval": "60s",
}

# What an operator changes: the seed's "specific addresses" config, the image as CCE's template
# sets it, and masqd's flags.
OVERLAY: dict[str, Any] = {
    "CNIMasqAgentImage": "registry.example.com/cce-plugin-pro/masqd:v1.2.3",
    "config": {
        "masqueradeCIDRs": ["10.10.10.10/32"],
        "nonMasqueradeCIDRs": [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "100.64.230.0/24",
            "192.168.0.0/16",
            "fc00::/7",
        ],
        "masqOutBound": False,
    },
    "masqd": {
        "backend": "nftables",
        "nftTable": "masq_v2",
        "iptablesMode": "legacy",
        "enableIPv6": False,
        "randomFully": True,
        "toPorts": "1024-29999,32768-65535",
        "logFormat": "text",
        "metricsAddress": "",
    },
    "resources": {"limits": {"memory": "300Mi"}},
}


def require_tool(name: str) -> str:
    """The tool's path; a missing tool skips locally and fails in CI."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (scripts/install-deps.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def load_render_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_manifests", ROOT / "scripts" / "render_manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_script = load_render_script()


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects as Helm renders them into kube-system."""
    text = "\n---\n".join(render_script.render_chart(values).values())
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {obj["kind"]: obj for obj in objects}
    assert len(kinds) == len(objects), "one object of each kind"
    return kinds


def container(daemonset: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    spec = daemonset["spec"]["template"]["spec"]
    (found,) = [c for c in spec["initContainers" if init else "containers"] if c["name"] == name]
    return dict(found)


def volume_for(
    daemonset: dict[str, Any], mount_path: str, name: str = "masqd", init: bool = False
) -> dict[str, Any]:
    """The pod volume mounted at mount_path in the named container."""
    mounts = container(daemonset, name, init=init)["volumeMounts"]
    (mount,) = [m for m in mounts if m["mountPath"] == mount_path]
    volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    return dict(volume)


@pytest.fixture(scope="module")
def default_objects() -> dict[str, dict[str, Any]]:
    return by_kind(render())


@pytest.fixture(scope="module")
def overlay_objects() -> dict[str, dict[str, Any]]:
    return by_kind(render(OVERLAY))


# ---- the chart -----------------------------------------------------------------------------


def test_chart_lints_without_warnings() -> None:
    """`helm lint --strict` finds no error and no warning in the chart."""
    report = helm_python.lint(
        CHART, strict=True, namespace="kube-system", kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_renders_only_a_configmap_and_a_daemonset(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """No RBAC, no ServiceAccount: masqd reads a mounted ConfigMap and never calls the API."""
    assert sorted(default_objects) == ["ConfigMap", "DaemonSet"]
    for obj in default_objects.values():
        assert obj["metadata"]["name"] == "cce-ip-masq-agent"
        assert obj["metadata"]["namespace"] == "kube-system"
    pod = default_objects["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod


def test_configmap_holds_the_default_config_under_ip_masq_agent(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """RFC 1918 and fc00::/7 kept, everything else masqueraded, link-local kept, 60s resync."""
    data = default_objects["ConfigMap"]["data"]
    assert list(data) == ["ip-masq-agent"]
    assert yaml.safe_load(data["ip-masq-agent"]) == DEFAULT_CONFIG


def test_config_is_mounted_optional_at_etc_config(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """/etc/config/ip-masq-agent, optional: a missing ConfigMap means defaults, not a stuck pod."""
    ds = default_objects["DaemonSet"]
    volume = volume_for(ds, "/etc/config")
    assert volume["configMap"]["name"] == "cce-ip-masq-agent"
    assert volume["configMap"]["optional"] is True
    assert volume["configMap"]["items"] == [{"key": "ip-masq-agent", "path": "ip-masq-agent"}]
    (mount,) = [
        m for m in container(ds, "masqd")["volumeMounts"] if m["mountPath"] == "/etc/config"
    ]
    assert "subPath" not in mount, "a subPath mount would never see ConfigMap updates"
    assert "--config=/etc/config/ip-masq-agent" in container(ds, "masqd")["args"]


def test_daemonset_runs_on_the_host_network_with_net_admin_not_privileged(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """hostNetwork, NET_ADMIN and NET_RAW only, no privilege escalation."""
    ds = default_objects["DaemonSet"]
    assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
    security = container(ds, "masqd")["securityContext"]
    assert security.get("privileged", False) is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}


def test_daemonset_mounts_the_xtables_lock_and_the_socket_directory(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """The host's /run/xtables.lock (as kube-proxy mounts it) and /run/masqd for the socket."""
    ds = default_objects["DaemonSet"]
    assert volume_for(ds, "/run/xtables.lock")["hostPath"] == {
        "path": "/run/xtables.lock",
        "type": "FileOrCreate",
    }
    assert volume_for(ds, "/run/masqd")["hostPath"] == {
        "path": "/run/masqd",
        "type": "DirectoryOrCreate",
    }
    assert "--socket=/run/masqd/masqd.sock" in container(ds, "masqd")["args"]


def test_daemonset_reads_the_kernel_module_lists_read_only_with_backend_auto(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """--backend=auto by default, with the host's /lib/modules mounted read-only (untyped, as
    kube-proxy mounts it), so masqd sees whether the iptables backend's xt modules exist."""
    ds = default_objects["DaemonSet"]
    assert volume_for(ds, "/lib/modules")["hostPath"] == {"path": "/lib/modules"}
    (mount,) = [
        m for m in container(ds, "masqd")["volumeMounts"] if m["mountPath"] == "/lib/modules"
    ]
    assert mount["readOnly"] is True
    args = container(ds, "masqd")["args"]
    assert "--backend=auto" in args and "--nft-table=masqd" in args


def test_daemonset_reaches_every_node_first(default_objects: dict[str, dict[str, Any]]) -> None:
    """Every taint tolerated, system-node-critical, one node at a time on update."""
    ds = default_objects["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }


def test_every_container_has_requests_and_limits(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """CPU and memory requests and limits on masqd and on the CNI installer."""
    ds = default_objects["DaemonSet"]
    for c in [container(ds, "masqd"), container(ds, "cni-chain")]:
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, c["name"]


def test_masqd_runs_under_tini(default_objects: dict[str, dict[str, Any]]) -> None:
    """masqd's container starts tini as PID 1 (a pod's command replaces the image's), so what
    a killed worker leaves behind is reaped, not left as zombies of masqd."""
    assert container(default_objects["DaemonSet"], "masqd")["command"] == ["tini", "--", "masqd"]


def test_probes_run_masqctl_health(default_objects: dict[str, dict[str, Any]]) -> None:
    """Liveness and readiness are `masqctl health` on masqd's socket."""
    masqd = container(default_objects["DaemonSet"], "masqd")
    for probe in ("livenessProbe", "readinessProbe"):
        command = masqd[probe]["exec"]["command"]
        assert command[0] == "masqctl" and command[-1] == "health"
        assert "--socket=/run/masqd/masqd.sock" in command
        assert masqd[probe]["timeoutSeconds"] >= 5


def test_cni_chain_sidecar_installs_masq_cni_and_keeps_it_chained(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """A long-running container (not an init container, which would crash-loop while no
    conflist exists) runs `masq-cni install --chain --watch` against the host's directories,
    with the host's root for the run check."""
    ds = default_objects["DaemonSet"]
    assert "initContainers" not in ds["spec"]["template"]["spec"]
    sidecar = container(ds, "cni-chain")
    assert sidecar["image"] == container(ds, "masqd")["image"]
    assert sidecar["command"] == [
        "masq-cni",
        "install",
        "--bin-dir=/host/opt/cni/bin",
        "--conf-dir=/host/etc/cni/net.d",
        "--host-root=/host",
        "--chain",
        "--watch",
    ]
    assert "restartPolicy" not in sidecar
    assert volume_for(ds, "/host/opt/cni/bin", "cni-chain")["hostPath"]["path"] == "/opt/cni/bin"
    assert volume_for(ds, "/host/etc/cni/net.d", "cni-chain")["hostPath"]["path"] == (
        "/etc/cni/net.d"
    )


def test_host_root_is_mounted_read_only_for_the_run_check(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """The host's / at /host, read-only; only the CNI bin and conf directories are writable,
    mounted on top of it; masqd itself sees none of them."""
    ds = default_objects["DaemonSet"]
    assert volume_for(ds, "/host", "cni-chain")["hostPath"] == {"path": "/", "type": "Directory"}
    mounts = {m["mountPath"]: m for m in container(ds, "cni-chain")["volumeMounts"]}
    assert mounts["/host"]["readOnly"] is True
    assert {p for p, m in mounts.items() if not m.get("readOnly")} == {
        "/host/opt/cni/bin",
        "/host/etc/cni/net.d",
    }
    masqd_mounts = {m["mountPath"] for m in container(ds, "masqd")["volumeMounts"]}
    assert not any(p.startswith("/host") for p in masqd_mounts)


def test_cni_chain_may_chroot_and_nothing_more(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    """Of all capabilities only SYS_CHROOT (to run the plugin in the host root); no privilege
    escalation, a read-only root filesystem."""
    security = container(default_objects["DaemonSet"], "cni-chain")["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_CHROOT"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security.get("privileged", False) is False


def test_chain_off_installs_the_binary_once_in_an_init_container() -> None:
    """cni.chain=false: a one-shot init container installs (after the same run check) and
    chains nothing; no watch runs."""
    pod = by_kind(render({"cni": {"chain": False}}))["DaemonSet"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "install-cni"
    assert "--host-root=/host" in init["command"]
    assert "--chain" not in init["command"] and "--watch" not in init["command"]
    assert [c["name"] for c in pod["containers"]] == ["masqd"]


def test_plugin_settings_become_installer_flags() -> None:
    """cni.failurePolicy and cni.timeout go into the conflist entry through the installer."""
    ds = by_kind(render({"cni": {"failurePolicy": "Fail", "timeout": "500ms"}}))["DaemonSet"]
    command = container(ds, "cni-chain")["command"]
    assert "--failure-policy=fail" in command and "--timeout=500ms" in command
    default = container(by_kind(render())["DaemonSet"], "cni-chain")["command"]
    assert not any(a.startswith(("--failure-policy", "--timeout")) for a in default)


def test_default_image_is_the_one_make_image_builds(
    default_objects: dict[str, dict[str, Any]],
) -> None:
    assert container(default_objects["DaemonSet"], "masqd")["image"] == "localhost/masqd:dev"


# ---- what an operator changes ----------------------------------------------------------------


def test_cce_image_key_sets_the_image_of_every_container(
    overlay_objects: dict[str, dict[str, Any]],
) -> None:
    """CNIMasqAgentImage, as CCE's template sets it, wins over the image block."""
    ds = overlay_objects["DaemonSet"]
    for c in [container(ds, "masqd"), container(ds, "cni-chain")]:
        assert c["image"] == OVERLAY["CNIMasqAgentImage"]


def test_image_block_sets_repository_and_tag() -> None:
    ds = by_kind(render({"image": {"repository": "reg.example/masqd", "tag": "v2"}}))["DaemonSet"]
    assert container(ds, "masqd")["image"] == "reg.example/masqd:v2"


def test_overlay_config_lands_in_the_configmap(
    overlay_objects: dict[str, dict[str, Any]],
) -> None:
    """Keys set by the operator replace the defaults; unset keys keep them."""
    config = yaml.safe_load(overlay_objects["ConfigMap"]["data"]["ip-masq-agent"])
    assert config == {**DEFAULT_CONFIG, **OVERLAY["config"]}


def test_overlay_flags_become_masqd_arguments(
    overlay_objects: dict[str, dict[str, Any]],
) -> None:
    args = container(overlay_objects["DaemonSet"], "masqd")["args"]
    assert "--backend=nftables" in args
    assert "--nft-table=masq_v2" in args
    assert "--iptables-mode=legacy" in args
    assert "--enable-ipv6=false" in args
    assert "--random-fully" in args
    assert "--to-ports=1024-29999,32768-65535" in args
    assert "--log-format=text" in args
    assert "--metrics-address=" in args, "empty turns the metrics endpoint off"
    assert "--nomasq-all-reserved-ranges" not in args


def test_resources_overlay_merges_with_defaults(
    overlay_objects: dict[str, dict[str, Any]],
) -> None:
    resources = container(overlay_objects["DaemonSet"], "masqd")["resources"]
    assert resources["limits"]["memory"] == "300Mi"
    assert resources["limits"]["cpu"] and resources["requests"]["memory"]


def test_cni_install_can_be_turned_off() -> None:
    """Without the CNI plugin there is no init container and no host CNI directory mounted."""
    pod = by_kind(render({"cni": {"install": False}}))["DaemonSet"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert paths == {"/run/xtables.lock", "/run/masqd", "/lib/modules"}
    assert [c["name"] for c in pod["containers"]] == ["masqd"]


def test_extra_config_maps_are_projected_and_read_as_a_directory() -> None:
    """With extraConfigMaps, /etc/config is a projected volume of every ConfigMap (each
    optional) and masqd merges the directory instead of reading one file."""
    ds = by_kind(render({"extraConfigMaps": ["cloud-ip-masq-agent"]}))["DaemonSet"]
    sources = volume_for(ds, "/etc/config")["projected"]["sources"]
    assert [s["configMap"]["name"] for s in sources] == ["cce-ip-masq-agent", "cloud-ip-masq-agent"]
    assert all(s["configMap"]["optional"] is True for s in sources)
    assert sources[0]["configMap"]["items"] == [{"key": "ip-masq-agent", "path": "ip-masq-agent"}]
    args = container(ds, "masqd")["args"]
    assert "--config-dir=/etc/config" in args
    assert not any(a.startswith("--config=") for a in args)
    for obj in render({"extraConfigMaps": ["cloud-ip-masq-agent"]}):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_configmap_can_be_left_to_someone_else() -> None:
    assert sorted(by_kind(render({"configMap": {"create": False}}))) == ["DaemonSet"]


@pytest.mark.parametrize(
    "values",
    [
        {"masqd": {"iptablesMode": "iptables"}},
        {"masqd": {"backend": "nft"}},
        {"masqd": {"nftTable": "has space"}},
        {"config": {"masqOutBound": "yes"}},
        {"config": {"resyncInterval": 60}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"cni": {"binDir": "opt/cni/bin"}},
        {"cni": {"failurePolicy": "sometimes"}},
        {"cni": {"timeout": "2 seconds"}},
    ],
)
def test_chart_rejects_malformed_values(values: dict[str, Any]) -> None:
    """values.schema.json stops a typo before it reaches a cluster."""
    with pytest.raises(helm_python.HelmValuesError):
        render(values)


# ---- Kubernetes schemas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, OVERLAY, {"cni": {"install": False}}, {"cni": {"chain": False}}],
    ids=["defaults", "overlay", "no-cni", "no-chain"],
)
def test_every_object_is_valid_kubernetes_1_32(values: dict[str, Any] | None) -> None:
    """Strict validation: an unknown or misplaced field is an error, not ignored."""
    for obj in render(values):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_catches_an_unknown_field() -> None:
    """The validator is really strict: the check above is not vacuous."""
    ds = by_kind(render())["DaemonSet"]
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBE_VERSION, strict=True)


def test_rendered_file_validates_with_the_cli() -> None:
    """`kubernetes-validate --strict` passes on the file users apply."""
    tool = require_tool("kubernetes-validate")
    result = subprocess.run(
        [tool, "--strict", "--kubernetes-version", KUBE_VERSION, "--quiet", str(RENDERED)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- rendered manifests and kustomize --------------------------------------------------------


def test_rendered_manifests_are_current() -> None:
    """deploy/cce-ip-masq-agent.yaml is what `make manifests` makes from the chart now."""
    assert RENDERED.read_text() == render_script.render_manifests(), "run `make manifests`"


def test_render_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    """`render_manifests.py --check` exits 1 on a stale file and writes nothing."""
    stale = tmp_path / "stale.yaml"
    stale.write_text(RENDERED.read_text().replace("60s", "30s"))
    script = ROOT / "scripts" / "render_manifests.py"
    result = subprocess.run(
        [sys.executable, script, "--check", "--output", stale], capture_output=True, check=False
    )
    assert result.returncode == 1
    assert "30s" in stale.read_text()
    ok = subprocess.run([sys.executable, script, "--check"], capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr


def test_kustomization_uses_the_rendered_file() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == ["cce-ip-masq-agent.yaml"]


def test_kubectl_kustomize_builds_the_rendered_objects() -> None:
    """`kubectl kustomize deploy/` yields exactly the objects of the rendered file."""
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    rendered = [doc for doc in yaml.safe_load_all(RENDERED.read_text()) if doc]

    def key(obj: dict[str, Any]) -> str:
        return str(obj["kind"])

    assert sorted(built, key=key) == sorted(rendered, key=key)


def test_default_config_is_accepted_by_masqd(
    tmp_path: Path, default_objects: dict[str, dict[str, Any]]
) -> None:
    """`masqctl config validate` accepts the chart's default ConfigMap as it is mounted."""
    masqctl = require_tool("masqctl")
    config = tmp_path / "ip-masq-agent"
    config.write_text(default_objects["ConfigMap"]["data"]["ip-masq-agent"])
    result = subprocess.run(
        [masqctl, "config", "validate", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing at warning level or above."""
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runtime_is_slim_debian_running_masqd() -> None:
    """Multi-stage; the final stage is debian:bookworm-slim with iptables and ipset, runs masqd
    under tini."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and stages[-1] == "debian:bookworm-slim"
    final = "\n".join(lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :])
    assert "iptables" in final and "ipset" in final and "tini" in final
    assert 'CMD ["tini", "--", "masqd"' in final


def test_the_chart_ships_masqds_own_version() -> None:
    """The version is written once (masqd/__init__.py; pyproject reads it), and the chart's
    appVersion must say the same."""
    from masqd import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
