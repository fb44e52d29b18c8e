# Sourced by scripts/test and scripts/bench: find Python 3.13 and make .venv ready.
# Re-running reuses .venv while requirements_test.txt and pyproject.toml are unchanged.

find_python() {
  local candidate
  for candidate in python3.13 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/3.13"*/bin/python3.13 \
      "$HOME/.pyenv/versions/3.13"*/bin/python3.13; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

pip_install() {
  # This machine's pip config names local mirrors that may be absent; hide that noise.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

ensure_venv() {
  local python stamp_value
  python=$(find_python) || { echo "Python 3.13 not found (PATH or pyenv)" >&2; return 1; }
  stamp_value="$("$python" --version 2>&1) $(cat requirements_test.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ -x .venv/bin/python ] && [ "$(cat .venv/.stamp 2>/dev/null)" = "$stamp_value" ]; then
    return 0
  fi
  echo "creating .venv with $python"
  rm -rf .venv
  "$python" -m venv .venv
  pip_install --upgrade pip
  pip_install -r requirements_test.txt
  pip_install --no-deps --no-build-isolation -e .
  echo "$stamp_value" > .venv/.stamp
}

ensure_influxd() {
  # Debian's influxdb (1.x) is the real server the benchmarks and storage tests use.
  if command -v influxd >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "influxd is missing; install Debian's influxdb package (needs root)" >&2
    return 1
  fi
  echo "installing Debian's influxdb package"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null
  # The package's service is not wanted: tests and benchmarks start their own influxd.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now influxdb >/dev/null 2>&1 || true
  fi
}

typecheck() {
  # The integration, then the services. The services import the pipeline as the top-level
  # package ha_ingestor_pipeline (pyproject's package-dir); mypy cannot follow setuptools'
  # editable import hook, so it gets that name through a symlink kept inside .venv.
  .venv/bin/mypy custom_components/ha_ingestor
  mkdir -p .venv/typing
  ln -sfn "$PWD/custom_components/ha_ingestor/pipeline" .venv/typing/ha_ingestor_pipeline
  MYPYPATH="$PWD/services:$PWD/.venv/typing" .venv/bin/mypy -p ha_ingestor_services
}
