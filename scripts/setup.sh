#!/usr/bin/env bash
# Create .venv and install the project for the demos (dev, demos and dashboard extras);
# with --test also the integration extras and Debian's chromium, which the test suite uses.
# The CPU build of torch is installed first so that the project's torch range
# is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
FOR_TESTS=0
if [ "${1:-}" = "--test" ]; then
    FOR_TESTS=1
fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    $PIP install -q torch==2.13.0 2> >(grep -v "is ignored: it is neither" >&2)
fi
EXTRAS="dev,demos,dashboard"
if [ "$FOR_TESTS" = "1" ]; then
    EXTRAS="$EXTRAS,integrations"
fi
$PIP install -q -e ".[$EXTRAS]" 2> >(grep -v "is ignored: it is neither" >&2)
# The dashboard inlines plotly.js: npm's 1.5 MB cartesian bundle starts about three times faster
# in a browser than the full bundle of the plotly PyPI package (the fallback). Optional.
BUNDLE=.venv/dashboard-js/node_modules/plotly.js-cartesian-dist-min/plotly-cartesian.min.js
if [ ! -f "$BUNDLE" ] && command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --no-save --prefix .venv/dashboard-js \
        plotly.js-cartesian-dist-min@4.1.1 >/dev/null 2>&1 \
        || echo "setup: npm could not install plotly.js-cartesian-dist-min (the dashboard uses the plotly package's bundle)" >&2
fi
# The dashboard's browser test drives Debian's chromium with its chromedriver (a browser
# download does not work here). Installed when missing and we may (root, apt-get present);
# otherwise that test skips and says why.
if [ "$FOR_TESTS" = "1" ] && { ! command -v chromium >/dev/null 2>&1 \
        || ! command -v chromedriver >/dev/null 2>&1; }; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium chromium-driver) >/dev/null 2>&1 \
            || echo "setup: could not install chromium (the browser test will skip)" >&2
    fi
fi
