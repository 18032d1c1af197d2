#!/usr/bin/env bash
# Starts the local PostgreSQL and Redis that bin/airflow-celery and tests/stack need, if they are not
# running yet; idempotent. PostgreSQL: the Debian cluster "main" (127.0.0.1:5432, trust auth);
# Redis: 127.0.0.1:6379 without persistence.
#   devtools/ensure_services.sh        (exit 0 when both answer; 1 otherwise)
set -euo pipefail

wait_for() {  # wait_for <what> <command...>: up to 30 s
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "ensure_services: $what did not come up" >&2
  return 1
}

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "ensure_services: PostgreSQL already running"
else
  echo "ensure_services: starting PostgreSQL"
  # (a cluster that is just starting makes pg_ctlcluster fail: the wait below decides)
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start \
    || echo "ensure_services: pg_ctlcluster exited with $?" >&2
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi

if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "ensure_services: Redis already running"
else
  echo "ensure_services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || echo "ensure_services: redis-server exited with $?" >&2
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
