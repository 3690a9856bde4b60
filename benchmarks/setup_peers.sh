#!/usr/bin/env bash
# Install the peers that the benchmarks compare against, into the active virtual environment.
# Never needed by the test suite. Needs root for apt (OpenBLAS headers, gfortran).
#   tntorch, teneva            : plain pip
#   maxvolpy 0.3.8 (C kernel)  : its numpy.distutils build no longer runs on numpy 2; we fetch
#                                the sdist with pip and build _maxvol.pyx with a minimal setup.py
#   ttpy 1.2.1 (Fortran)       : needs gfortran, setuptools<60 and numpy.distutils flags
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$here/_peers"
mkdir -p "$work"

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq libopenblas-dev gfortran >/dev/null || {
    apt-get update -qq && apt-get install -y -qq libopenblas-dev gfortran >/dev/null; }
fi
python -m pip install --quiet tntorch teneva threadpoolctl cython matplotlib six

fetch_sdist() {  # $1 = requirement; prints the unpacked source directory
  local tmp="$work/download-$1"
  rm -rf "$tmp" && mkdir -p "$tmp"
  # pip unpacks the sdist, then fails to build its metadata; --no-clean keeps the source.
  TMPDIR="$tmp" python -m pip download --no-clean --no-deps --no-build-isolation \
    --no-binary :all: -d "$tmp" "$1" >/dev/null 2>&1 || true
  find "$tmp" -maxdepth 3 -name setup.py -path "*pip-download*" -printf '%h\n' | head -n 1
}

if ! python -c "import maxvolpy._maxvol" 2>/dev/null; then
  src="$(fetch_sdist maxvolpy==0.3.8)"
  cat > "$src/setup.py" <<'PY'
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extension = Extension("maxvolpy._maxvol", ["maxvolpy/_maxvol.pyx"],
                      include_dirs=[numpy.get_include()], libraries=["openblas"])
setup(name="maxvolpy", version="0.3.8", packages=["maxvolpy"],
      ext_modules=cythonize([extension], language_level=3))
PY
  rm -f "$src/pyproject.toml"
  python -m pip install --quiet --no-build-isolation "$src"
fi
python -c "import maxvolpy._maxvol; print('maxvolpy C kernel: ok')"

# ttpy: built into a wheel in a throwaway venv (it needs setuptools<60 and numpy.distutils),
# then installed here.
if ! python -c "import tt.cross.rectcross" 2>/dev/null; then
  src="$(fetch_sdist ttpy==1.2.1)"
  numpy_version="$(python -c 'import numpy; print(numpy.__version__)')"
  builder="$work/ttpy-build-venv"
  python -m venv "$builder"
  "$builder/bin/python" -m pip install --quiet "numpy==$numpy_version" "setuptools<60" wheel six cython
  # numpy.distutils writes Fortran modules into build/temp.*; later subpackages need it on -I.
  inc="$src/build/temp.linux-$(uname -m)-$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  (cd "$src" && FFLAGS="-fallow-argument-mismatch -I$inc" \
      F90FLAGS="-fallow-argument-mismatch -I$inc" \
      "$builder/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheels" .)
  python -m pip install --quiet --no-deps "$work"/wheels/ttpy-*.whl
fi
python -c "import tt; print('ttpy: ok')"
