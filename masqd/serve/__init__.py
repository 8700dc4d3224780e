"""What masqd serves: the gRPC control API on a unix socket, Prometheus metrics and the health
endpoints. It sees the supervisor's surface only: futures from `resync`, frozen status
snapshots, and the event bus."""
