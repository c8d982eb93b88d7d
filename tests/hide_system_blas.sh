#!/bin/bash
# Run a command with the system OpenBLAS (and libgfortran, unless KEEP_GFORTRAN=" ") hidden, as on
# a fresh machine without the Debian packages. Needs root and a private mount namespace:
#   unshare -m tests/hide_system_blas.sh .venv/bin/python -m pytest -q tests/test_blas.py
set -e
empty=$(mktemp -d)
for d in /usr/lib/x86_64-linux-gnu/openblas-pthread /usr/lib/x86_64-linux-gnu/openblas-openmp; do
  [ -d "$d" ] && mount --bind "$empty" "$d"
done
for f in ${KEEP_GFORTRAN:-/usr/lib/x86_64-linux-gnu/libgfortran.so.5.0.0}; do
  [ -e "$f" ] && mount --bind /dev/null "$f"
done
exec "$@"
