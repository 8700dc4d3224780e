"""masqd's benchmark suite: masqd held against the kernel's own cost (`make bench`).

Every figure runs in network namespaces the bench creates and deletes; nothing here touches
the host's iptables. See bench/README.md for how each figure is measured and why its baseline.
"""
