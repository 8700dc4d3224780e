"""masqd.api.v1: the gRPC contract (generated from protos/), and the family numbers beside it."""
