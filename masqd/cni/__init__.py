"""masq-cni: a chained CNI plugin that asks masqd to resync after pod network setup.

Chained last in the node's conflist, after the plugin that sets up the pod network::

    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
        {"type": "bridge", ...},
        {"type": "masq-cni", "socket": "/run/masqd/masqd.sock", "timeout": "2s",
         "failurePolicy": "ignore"}]}

Keys (all optional):

- ``socket``: masqd's control API socket, default ``/run/masqd/masqd.sock``.
- ``timeout``: how long ADD, CHECK and STATUS wait for masqd, counted from the plugin's start:
  a Go duration string (``"2s"``, ``"500ms"``, ``"1m"``, the syntax of masqd's
  ``resyncInterval``) or a JSON number of seconds (``1.5``). More than 0, at most 60s; default 2s.
- ``failurePolicy``: ``ignore`` (default) or ``fail`` (any case, as Kubernetes writes
  ``Ignore``/``Fail``): what ADD does when masqd is unreachable, too slow or its sync failed.

Commands (config versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 are accepted):

- ADD: ``Resync`` with reason CNI and wait (masqd counts it under "cni"), then print
  ``prevResult`` unchanged. On failure, ``ignore`` logs to stderr and prints ``prevResult``;
  ``fail`` answers error 11 (try again later). No socket file fails at once; a socket nobody
  answers on is retried until the timeout (masqd may be restarting).
- DEL: nothing to undo (the rules are per node); succeeds always, also without a network
  namespace, ``prevResult`` or masqd.
- CHECK: fails with error 100 when masqd reports a family's chain out of sync after one resync
  (so a CHECK right after ADD converges); masqd unreachable follows ``failurePolicy``.
- VERSION: the supported versions. GC (1.1.0): succeeds, nothing is kept per attachment.
- STATUS (1.1.0): succeeds when ADD would work: masqd answers, or ``failurePolicy`` is
  ``ignore`` (ADD then passes through; the reason is logged). With ``fail`` and masqd
  unreachable: error 50 (plugin not available).

Errors are the spec's object on stdout with a non-zero exit: 1 unsupported version (or a command
the config's version lacks), 2 an unsupported ``failurePolicy`` value, 4 a missing or unknown
``CNI_COMMAND`` or a missing ``CNI_CONTAINERID``/``CNI_NETNS``/``CNI_IFNAME``, 5 stdin
unreadable, 6 stdin not a JSON object (not UTF-8 JSON, nested too deeply, or over 4 MiB), 7
invalid config (a key of the wrong type or range, no ``prevResult`` on ADD or CHECK), 11 and 50
as above, 100 chain out of sync, 999 a bug.

Without ``CNI_COMMAND``, ``masq-cni install --bin-dir DIR [--conf-dir DIR --chain [--watch]]``
and ``masq-cni uninstall --bin-dir DIR --conf-dir DIR`` install it (see ``masqd.cni.install``).

Start-up is on the pod start path: the plugin's modules import only the cheap parts of the
standard library, and talk to masqd without grpcio or protobuf (``masqd.client.light``).
"""
