#!/usr/bin/env bash
# scripts/browser.sh: headless Chromium and its WebDriver (chromedriver) for the web console's
# browser test (tests/console.rs). Used by `make test` like scripts/rabbitmq.sh; works from any
# directory.
#
# Usage: scripts/browser.sh COMMAND
#   install   installs Debian's chromium and chromium-driver packages with apt-get when either
#             program is missing (root on Debian/Ubuntu only); a second `install` does nothing.
#             Fails, saying why, when they cannot be installed: the browser test never skips.
#   status    where the programs are and their versions
#
# The test finds the programs on PATH, or where PARTLOG_CHROMIUM and PARTLOG_CHROMEDRIVER name
# them (a browser installed some other way).
set -euo pipefail

say() { echo "[browser] $*" >&2; }
die() { say "error: $*"; exit 1; }

CHROMIUM=${PARTLOG_CHROMIUM:-chromium}
CHROMEDRIVER=${PARTLOG_CHROMEDRIVER:-chromedriver}

present() { command -v "$CHROMIUM" >/dev/null && command -v "$CHROMEDRIVER" >/dev/null; }

install() {
  if present; then
    say "present: $(command -v "$CHROMIUM"), $(command -v "$CHROMEDRIVER")"
    return 0
  fi
  command -v apt-get >/dev/null || die "chromium or chromedriver is missing and this is not" \
    "Debian/Ubuntu: install Chromium and its chromedriver, or name them with PARTLOG_CHROMIUM" \
    "and PARTLOG_CHROMEDRIVER"
  [[ $(id -u) == 0 ]] || die "chromium or chromedriver is missing; installing them needs root:" \
    "sudo $0 install (or apt-get install chromium chromium-driver)"
  say "installing chromium and chromium-driver with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q chromium chromium-driver >/dev/null || die "apt-get install chromium chromium-driver failed"
  fi
  present || die "apt-get installed chromium-driver, but $CHROMIUM or $CHROMEDRIVER is still not on PATH"
  say "installed: $("$CHROMIUM" --version 2>/dev/null || echo chromium), $("$CHROMEDRIVER" --version)"
}

status() {
  for program in "$CHROMIUM" "$CHROMEDRIVER"; do
    if command -v "$program" >/dev/null; then
      say "$(command -v "$program"): $("$program" --version 2>/dev/null | head -1)"
    else
      say "$program: not installed (scripts/browser.sh install)"
    fi
  done
}

case ${1:-} in
  install) install ;;
  status) status ;;
  *) die "usage: $0 install|status" ;;
esac
