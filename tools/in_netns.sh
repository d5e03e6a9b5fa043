#!/usr/bin/env bash
# Run a command inside a private network namespace that has only loopback, so WebRTC
# tests can never reach an outside address. Root uses a plain net namespace; other
# users get one through a user namespace (unshare -r).
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' in_netns "$@"
else
  exec unshare -rn bash -c 'ip link set lo up && exec "$@"' in_netns "$@"
fi
