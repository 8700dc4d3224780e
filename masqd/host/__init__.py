"""Everything that touches the node: iptables commands, the config file on disk, the C heap, and
the in-process kernel probe (`probe/`). The exec path and the probe never import each other."""
