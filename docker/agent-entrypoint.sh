#!/bin/sh
# Start agents of a cluster file in this container: `moa up <file> --only <agents>`.
#   MOA_CLUSTER_FILE  cluster file, relative to /app (required)
#   MOA_AGENTS        comma-separated agent names (default: all agents of the file)
#   MOA_NATS_URL      NATS servers, comma-separated (required: containers never embed a server)
#   MOA_NATS_*        credential of this agent (env/<user>.env written by `moa auth init`)
# Extra arguments are passed on to `moa up`.
set -eu
: "${MOA_CLUSTER_FILE:?set MOA_CLUSTER_FILE to a cluster file inside /app, e.g. examples/quickstart/cluster.ts}"
: "${MOA_NATS_URL:?set MOA_NATS_URL, e.g. tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222}"
cd /app
if [ -n "${MOA_AGENTS:-}" ]; then
  exec node packages/cli/bin/moa.js up "$MOA_CLUSTER_FILE" --only "$MOA_AGENTS" --nats "$MOA_NATS_URL" "$@"
fi
exec node packages/cli/bin/moa.js up "$MOA_CLUSTER_FILE" --nats "$MOA_NATS_URL" "$@"
