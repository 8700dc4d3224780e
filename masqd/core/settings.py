"""Process settings from masqd's flags: fixed for the life of the process, unlike the config."""

from __future__ import annotations

from dataclasses import dataclass, field

from masqd.core.defaults import DEFAULT_CONFIG_PATH, DEFAULT_SOCKET
from masqd.core.model import Family
from masqd.core.rules import RenderOptions


@dataclass(frozen=True)
class Settings:
    """Everything masqd's command line decides."""

    config_path: str = DEFAULT_CONFIG_PATH
    """The policy file (a ConfigMap volume on a node)."""
    config_dir: str = ""
    """A directory whose `ip-masq*` files are merged instead (--config-dir); empty: none."""
    socket: str = DEFAULT_SOCKET
    """Unix socket of the control API; empty serves no API."""
    socket_mode: int = 0o600
    """Permission bits of the socket file."""
    socket_group: str = ""
    """Group owning the socket file; empty keeps the process's."""
    backend: str = "auto"
    """iptables, nftables, or auto (masqd.core.choice)."""
    iptables_mode: str = "auto"
    """auto, legacy or nft: the iptables backend's mode."""
    render: RenderOptions = field(default_factory=RenderOptions)
    """Chain name and MASQUERADE options."""
    enable_ipv6: bool = True
    """Run the IPv6 worker and accept IPv6 entries."""
    all_reserved_ranges: bool = False
    """Default nonMasqueradeCIDRs include every reserved IPv4 range."""
    drift_check_interval: float = 5.0
    """Seconds between checks that our chain is still as we wrote it."""
    file_poll_interval: float = 0.5
    """Seconds between looks at the config file's identity (catches the ..data swap)."""
    max_restart_backoff: float = 30.0
    """Longest wait before restarting a crashed worker."""
    iptables_timeout: float = 10.0
    """Longest any one iptables command may run."""
    lock_wait: int = 5
    """Seconds iptables-restore waits for the xtables lock (-w)."""
    retry_deadline: float = 30.0
    """How long a worker retries a retryable failure before reporting it."""
    health_timeout: float = 60.0
    """A requested sync not applied within this long is unhealthy, whatever the reason."""

    @property
    def config_source(self) -> str:
        """The path the policy is read from: the directory, else the file."""
        return self.config_dir or self.config_path

    @property
    def families(self) -> tuple[Family, ...]:
        return (Family.IPV4, Family.IPV6) if self.enable_ipv6 else (Family.IPV4,)
