# Sourced by scripts/screenshot, scripts/screenshots and scripts/test: a real browser for
# the UI walk and the screenshots. Debian's chromium, driven by npm's playwright-core
# (Playwright's own browser download is not used), both installed once when missing as
# root on Debian: chromium, node and npm with apt, playwright-core under
# $HA_INGESTOR_CACHE/browser (default /var/cache/ha-ingestor/browser), outside the checkout.
# Inside the latest leg's Debian root (scripts/_root.sh) that is the root's own /var/cache.

BROWSER_CACHE=${HA_INGESTOR_CACHE:-/var/cache/ha-ingestor}/browser

browser_missing() {
  # What is missing, one word each (chromium node playwright-core); nothing when ready.
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(node)
  [ -f "$BROWSER_CACHE/node_modules/playwright-core/index.mjs" ] || missing+=(playwright-core)
  echo "${missing[*]}"
}

ensure_browser() {
  # Install what is missing (needs root and apt), then export CHROMIUM and
  # PLAYWRIGHT_CORE for the Node scripts. Says what is missing and returns 1 when it
  # cannot install it.
  local missing packages=()
  missing=$(browser_missing)
  if [ -n "$missing" ]; then
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    command -v node >/dev/null 2>&1 || packages+=(nodejs)
    command -v npm >/dev/null 2>&1 || packages+=(npm)
    if [ ${#packages[@]} -gt 0 ]; then
      if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "missing: $missing (as root on Debian: apt-get install ${packages[*]})" >&2
        return 1
      fi
      echo "installing Debian's ${packages[*]}" >&2
      # A Debian root made by scripts/_root.sh may hold a mirror whose Release file is
      # past its Valid-Until on this machine's clock (the host's apt is set up the same).
      apt-get update -qq -o Acquire::Check-Valid-Until=false >/dev/null || return 1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" fonts-dejavu-core >/dev/null || return 1
    fi
    if [ ! -f "$BROWSER_CACHE/node_modules/playwright-core/index.mjs" ]; then
      echo "installing npm's playwright-core in $BROWSER_CACHE" >&2
      mkdir -p "$BROWSER_CACHE"
      npm install --prefix "$BROWSER_CACHE" --no-save --silent --no-audit --no-fund \
        playwright-core@1 >&2 || return 1
    fi
  fi
  export CHROMIUM PLAYWRIGHT_CORE
  CHROMIUM=$(command -v chromium)
  PLAYWRIGHT_CORE="$BROWSER_CACHE/node_modules/playwright-core/index.mjs"
}
