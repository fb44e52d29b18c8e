# Sourced by scripts/test, scripts/bench and scripts/demo: the two test legs and their venvs.
#
#   floor   Python 3.13, requirements_floor.txt  (the oldest Home Assistant supported), in .venv
#   latest  Python 3.14, requirements_latest.txt (the newest Home Assistant), in .venv-latest,
#           or, where no python3.14 is on PATH, inside a Debian root (scripts/_root.sh)
#

leg_python_version() {
  case "$1" in
    floor) echo 3.13 ;;
    latest) echo 3.14 ;;
    *) echo "unknown leg '$1' (floor or latest)" >&2; return 2 ;;
  esac
}

take_leg_option() {
  # take_leg_option ARGS...: `--ha LEG` (or `--ha=LEG`) sets LEG; the other arguments go
  # to REST, in order.
  REST=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --ha) LEG="${2:?--ha needs floor or latest}"; shift 2 ;;
      --ha=*) LEG="${1#--ha=}"; shift ;;
      *) REST+=("$1"); shift ;;
    esac
  done
  if [ -n "${LEG:-}" ]; then leg_python_version "$LEG" >/dev/null; fi
}

needs_root() {
  # needs_root LEG: true when the leg is latest and no Python 3.14 is at hand, so it runs
  # inside the Debian root (scripts/_root.sh).
  [ "$1" = latest ] && ! find_python 3.14 >/dev/null
}

leg_venv() {
  # Inside the Debian root the venv lives in the root, outside the checkout, so a fresh
  # clone reuses it (scripts/_root.sh sets HA_INGESTOR_LATEST_VENV).
  case "$1" in
    floor) echo .venv ;;
    latest) echo "${HA_INGESTOR_LATEST_VENV:-.venv-latest}" ;;
  esac
}

find_python() {
  local version=$1 candidate
  for candidate in "python$version" \
      "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/$version"*/bin/"python$version" \
      "$HOME/.pyenv/versions/$version"*/bin/"python$version"; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (${version/./, }))" 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

pip_install() {
  local venv=$1
  shift
  # This machine's pip config names local mirrors that may be absent; hide that noise.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v -e "is ignored: it is neither a file nor a directory" \
      -e "is ignored: it is either a non-existing path" >&2)
}

ensure_venv() {
  # ensure_venv LEG: make the leg's venv ready; prints nothing when it already is. The
  # pinned packages are reinstalled only when the Python or the requirements change; this
  # project (editable) when pyproject.toml or the checkout's place changes.
  local leg=$1 version venv python requirements packages project
  version=$(leg_python_version "$leg") || return 2
  venv=$(leg_venv "$leg")
  requirements="requirements_$leg.txt"
  python=$(find_python "$version") || { echo "Python $version not found (PATH or pyenv)" >&2; return 1; }
  packages="$("$python" --version 2>&1) $(cat "$requirements" requirements_tools.txt | sha256sum | cut -d' ' -f1)"
  project="$PWD $(sha256sum pyproject.toml | cut -d' ' -f1)"
  if ! [ -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$packages" ]; then
    echo "creating $venv with $python ($requirements)"
    # Some of the latest leg's pins have no wheel for its Python (requirements_latest.txt).
    if [ "$leg" = latest ]; then ensure_build_tools "$python"; fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip_install "$venv" --upgrade pip
    pip_install "$venv" -r "$requirements"
    echo "$packages" > "$venv/.stamp"
  fi
  if [ "$(cat "$venv/.stamp-project" 2>/dev/null)" != "$project" ]; then
    # setuptools warns that an editable install is one; that is the point.
    PYTHONWARNINGS="ignore:Editable installation" \
      pip_install "$venv" --no-deps --no-build-isolation -e .
    echo "$project" > "$venv/.stamp-project"
  fi
}

ensure_build_tools() {
  # ensure_build_tools PYTHON: a C++ compiler and PYTHON's headers, for the pinned packages
  # pip builds from source. Where missing they are installed with apt as root on Debian (the
  # latest leg's Debian root: g++ and python3.14-dev); elsewhere this says what is missing
  # and the pip install fails on them.
  local python=$1 packages=() include version
  command -v c++ >/dev/null 2>&1 || packages+=(g++)
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ -f "$include/Python.h" ] || packages+=("python$version-dev")
  if [ ${#packages[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing a C++ compiler or Python $version's headers (on Debian, as root:" \
      "apt-get install ${packages[*]}); packages built from source will fail" >&2
    return 0
  fi
  echo "installing Debian's ${packages[*]} (to build pinned packages from source)" >&2
  # As scripts/_browser.sh: the root's mirror may be past its Release file's Valid-Until.
  apt-get update -qq -o Acquire::Check-Valid-Until=false >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Use-Pty=0 "${packages[@]}" >/dev/null ||
    echo "could not install ${packages[*]}; packages built from source will fail" >&2
}

print_leg() {
  # One line saying what a leg runs, before its tests or benchmarks.
  "$2/bin/python" -c 'import sys, homeassistant.const as c
print(f"== leg {sys.argv[1]}: Python {sys.version.split()[0]}, Home Assistant {c.__version__}")' "$1"
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
  # typecheck VENV: the integration, then the services. The services import the pipeline as
  # the top-level package ha_ingestor_pipeline (pyproject's package-dir); mypy cannot follow
  # setuptools' editable import hook, so it gets that name through a symlink in the venv.
  local venv typing mypy
  venv=$(cd "$1" && pwd)
  typing="$venv/typing"
  # Each leg checks against its own Python (the newest Home Assistant is written in 3.14)
  # and keeps its own cache: the two Home Assistant versions would evict each other's.
  mypy=("$venv/bin/mypy" --cache-dir "$venv/.mypy_cache" --python-version
    "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')")
  "${mypy[@]}" custom_components/ha_ingestor
  mkdir -p "$typing"
  ln -sfn "$PWD/custom_components/ha_ingestor/pipeline" "$typing/ha_ingestor_pipeline"
  MYPYPATH="$PWD/services:$typing" "${mypy[@]}" -p ha_ingestor_services
}
