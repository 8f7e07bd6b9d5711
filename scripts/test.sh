#!/usr/bin/env bash
# Run the whole test suite against real services: Redis (required) and PostgreSQL when present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

export REDIS_TEST_URL=${REDIS_TEST_URL:-redis://127.0.0.1:6379/0}
if ! "$PY" -c "import redis, os; redis.Redis.from_url(os.environ['REDIS_TEST_URL'], socket_connect_timeout=2).ping()" 2>/dev/null; then
  echo "Redis is not reachable at $REDIS_TEST_URL; start it (redis-server) or set REDIS_TEST_URL." >&2
  exit 1
fi

# The suite runs on the machine's PostgreSQL when one answers, else on SQLite.
if [ -z "${DATABASE_URL:-}" ] && "$PY" -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=2).close()" 2>/dev/null; then
  # A database name of its own per checkout, so two runs on one machine do not collide.
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/gateway_$(pwd | md5sum | cut -c1-8)"
fi
echo "tests: redis=$REDIS_TEST_URL database=${DATABASE_URL:-sqlite}"

exec "$PY" -m pytest "$@"
