#!/bin/sh
# The whole test suite; see tests/run_all.py.
exec python3 "$(dirname "$0")/run_all.py" "$@"
