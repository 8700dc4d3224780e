"""masq-cni: a chained CNI plugin that asks masqd to resync after pod network setup.

The plugin runs on the pod start path, so the modules here import only the standard library
at startup; gRPC and the generated API code are imported only by the commands that talk to
masqd (ADD, CHECK, STATUS).
"""
