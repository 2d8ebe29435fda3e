#!/usr/bin/env bash
# Sets up a Debian machine to build, run and test dfs, and puts `dfs` and `dfs-mount` on
# the PATH. Idempotent: every step checks first and does only what is missing, so it is
# cheap to run before every command (the README's quick start and .ci/run do).
#
#   ./scripts/setup.sh              as root, or as a user who may sudo
#   ./scripts/setup.sh --link       point the commands on the PATH at this checkout
#   ./scripts/setup.sh --no-link    leave the commands on the PATH alone (.ci/run)
#
# Steps: the system packages (libfuse 2 for fuse-native, fusermount, redis-server, and what
# compiles fuse-native's patched addon: GNU patch, make, g++, python3), then `npm ci` when
# node_modules does not match package-lock.json, the patched fuse-native
# (scripts/build-fuse-native.js, a no-op when current), helm (built with `go install` when
# missing, for the chart's test), `npm run build`, and symlinks from
# $DFS_BIN_DIR (default /usr/local/bin) to bin/dfs and bin/dfs-mount.
#
# The symlinks are the user's install, shared by every checkout on the machine, so a
# second clone (a test run, CI in a temporary folder) must not take them over: setup links
# a command only when there is none yet, or when the link points at a checkout that no
# longer exists, or when asked with --link. It says what it did with each.
# When run with sudo, the npm steps run as the invoking user, so the work tree stays theirs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${DFS_BIN_DIR:-/usr/local/bin}"
NODE_VERSION_MIN=20.18.1 # package.json engines; undici 7 needs it
export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# auto: link only where no working link exists; force: --link; none: --no-link.
LINK_MODE=auto
for arg in "$@"; do
  case "$arg" in
    --link) LINK_MODE=force ;;
    --no-link) LINK_MODE=none ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument ${arg} (--link, --no-link or --help)" ;;
  esac
done

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
else
  command -v sudo >/dev/null 2>&1 || die "run this as root, or install sudo"
  SUDO=(sudo)
fi

# The npm steps run as the user who asked for them, not as root via sudo.
as_user() {
  if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
    sudo -u "$SUDO_USER" -H -- "$@"
  else
    "$@"
  fi
}

# --- system packages ----------------------------------------------------------------------
installed() { dpkg -s "$1" >/dev/null 2>&1; }

missing=()
# fuse-native loads libfuse.so.2; Debian 13 renamed the package libfuse2t64.
if ! installed libfuse2 && ! installed libfuse2t64; then missing+=(libfuse2); fi
# fusermount (the setuid helper of libfuse 2) mounts and unmounts for non-root users.
if ! installed fuse && ! command -v fusermount >/dev/null 2>&1; then missing+=(fuse); fi
if ! installed redis-server && ! command -v redis-server >/dev/null 2>&1; then missing+=(redis-server); fi
# scripts/build-fuse-native.js patches fuse-native and compiles its addon with node-gyp.
# The end-to-end suites drive git, rsync and tar through a mount, and run their POSIX
# cases in python3 under setpriv (util-linux, always there on Debian).
for tool in patch make g++ python3 git rsync tar; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# setfattr (Debian's attr): the permission suites set trusted.* attributes on a local disk
# and through a mount (test/integration/permissions, test/e2e/credential-mount).
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
# The metrics test checks every scrape with promtool (Debian's prometheus package), and the
# status page test drives Debian's chromium headless (test/e2e/metrics.test.ts, status-page).
if ! command -v promtool >/dev/null 2>&1; then missing+=(prometheus); fi
if ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi

if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q
  packages=()
  for package in "${missing[@]}"; do
    if [ "$package" = libfuse2 ] && ! apt-cache show libfuse2 >/dev/null 2>&1; then
      package=libfuse2t64
    fi
    packages+=("$package")
  done
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
else
  say "system packages present (libfuse2, fuse, redis-server, patch, make, g++, python3, git, rsync, tar, attr, promtool, chromium)"
fi

# --- helm, for the chart's test (test/e2e/chart.test.ts) --------------------------------------
# The real helm, built from source with Go (no binary download to trust): the test finds it
# on the PATH or in $(go env GOPATH)/bin, where `go install` puts it.
HELM_VERSION=v4.3.2
helm_found() {
  command -v helm >/dev/null 2>&1 && return 0
  command -v go >/dev/null 2>&1 && [ -x "$(as_user go env GOPATH)/bin/helm" ]
}
if helm_found; then
  say "helm present"
elif command -v go >/dev/null 2>&1; then
  say "go install helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
  as_user go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
else
  say "warning: helm is missing and there is no Go to build it; the chart test needs it"
  say "         (install Go 1.25 or newer, then run this again)"
fi

if [ ! -e /dev/fuse ]; then
  say "warning: /dev/fuse is missing; mounting (dfs-mount, the e2e tests) needs it"
  say "         (in a container: run it with --device /dev/fuse --cap-add SYS_ADMIN)"
fi

# --- Node.js and the build ----------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "Node.js ${NODE_VERSION_MIN} or newer is needed (node is not on the PATH)"
command -v npm >/dev/null 2>&1 || die "npm is needed (it comes with Node.js)"
node -e '
  const [have, want] = [process.versions.node, process.argv[1]].map((v) => v.split(".").map(Number));
  const older = have[0] - want[0] || have[1] - want[1] || have[2] - want[2];
  process.exit(older < 0 ? 1 : 0);
' "$NODE_VERSION_MIN" || die "Node.js ${NODE_VERSION_MIN} or newer is needed, this is $(node -v)"

cd "$ROOT"
# npm ci rewrites node_modules/.package-lock.json; when it matches package-lock.json's
# packages, the install is current and a reinstall would only cost time.
lock_current() {
  [ -f node_modules/.package-lock.json ] || return 1
  node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages || {};
    const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages || {};
    for (const [path, entry] of Object.entries(want)) {
      if (path === "") continue;
      // An optional package for another platform is in the lock but never installed.
      if (!have[path] && entry.optional) continue;
      if (!have[path] || have[path].version !== entry.version || !fs.existsSync(path)) process.exit(1);
    }
  '
}
if lock_current; then
  say "node_modules matches package-lock.json"
else
  say "npm ci"
  as_user npm ci --no-audit --no-fund
fi

# npm ci runs it as the postinstall script; run it again in case node_modules was current
# but the patched build was not (it does nothing when it is).
as_user node scripts/build-fuse-native.js

say "npm run build"
as_user npm run build --silent

chmod +x bin/dfs bin/dfs-mount 2>/dev/null || true

# --- commands on the PATH -----------------------------------------------------------------
# What $BIN_DIR/<command> is now decides what happens to it (LINK_MODE above): a link
# here stays; a link to another checkout that exists, or a file installed another way, is
# the user's choice and stays unless --link; a dangling link (its checkout was deleted) or
# no file at all is (re)made.
link_command() {
  local command="$1"
  local link="$BIN_DIR/$command"
  local target="$ROOT/bin/$command"
  local current
  current="$(readlink "$link" 2>/dev/null || true)"
  if [ "$current" = "$target" ]; then
    say "$link already points at this checkout"
    return
  fi
  if [ "$LINK_MODE" = none ]; then
    say "left $link as it is (--no-link); this checkout's $command is $target"
    return
  fi
  local was="none"
  if [ -L "$link" ] && [ -e "$link" ]; then
    was="a link to $current"
  elif [ -L "$link" ]; then
    was="a link to $current, which no longer exists"
  elif [ -e "$link" ]; then
    was="a file installed another way"
  fi
  if [ "$LINK_MODE" = auto ] && [ -e "$link" ]; then
    say "left $link as it is ($was); run scripts/setup.sh --link to point it at this checkout"
    return
  fi
  "${SUDO[@]}" ln -sfn "$target" "$link"
  say "linked $link -> $target (was: $was)"
}

for command in dfs dfs-mount; do
  [ -f "bin/$command" ] || die "bin/$command is missing from the work tree"
done
[ "$LINK_MODE" = none ] || "${SUDO[@]}" mkdir -p "$BIN_DIR"
for command in dfs dfs-mount; do link_command "$command"; done
if [ "$LINK_MODE" != none ]; then
  case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *) say "note: $BIN_DIR is not on your PATH; add it to run dfs and dfs-mount by name" ;;
  esac
fi

say "ready: dfs local up --mount DIR starts a cluster and mounts it; npm test runs the tests"
