#!/bin/sh
# Run berth's test suite (as root: the tests start real containers). Extra arguments go to
# pytest, e.g. ./test.sh -m "not slow" or ./test.sh tests/test_run_isolation.py
set -eu
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || ./install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
