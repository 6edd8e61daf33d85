# Sourced by bin/test: system tools some tests drive (Debian packages).
#   chromium  - the admin UI browser tests (Playwright drives it; no browser download)
#   promtool  - alert rule checks (package "prometheus"; nothing is started)
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${missing[*]} (first run only)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    else
        echo "bin/test: please install the Debian packages: ${missing[*]}" >&2
        exit 1
    fi
fi
