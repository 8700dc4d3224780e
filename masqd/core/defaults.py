"""Where masqd looks for its config and serves its API unless told otherwise: the one home of
these paths. Imports nothing, so masq-cni's start on every pod pays nothing for it."""

DEFAULT_CONFIG_PATH = "/etc/config/ip-masq-agent"
"""The key ip-masq-agent of the ConfigMap cce-ip-masq-agent, as the DaemonSet mounts it."""
DEFAULT_SOCKET = "/run/masqd/masqd.sock"
"""The control API's unix socket."""
