"""The engine: one worker process per family, the runner that feeds it requests, the config
watcher, the schedule, and the supervisor that ties them together. No gRPC here: the workers
are forked from this code before the server exists."""
