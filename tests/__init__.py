"""wiremark's test suite (its package runs first, before conftest imports grpcio)."""

import os

# grpcio's fork handlers restart its pollers in a forked child, and since grpcio 1.80 such a
# child can abort before it reaches exec (grpc/grpc#43055: "epoll_wait error: Bad file
# descriptor"). The test process forks through subprocess with a preexec_fn (which rules out
# vfork) while it holds channels, and never uses gRPC in a child that does not exec: it
# needs no fork support. Read when grpcio is imported, so set here, before any test module.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
