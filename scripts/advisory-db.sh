#!/usr/bin/env bash
# scripts/advisory-db.sh: the RustSec advisory database that `make lint` (cargo deny) checks
# the dependencies against, from the snapshot kept in supply-chain/.
#
# Usage:
#   scripts/advisory-db.sh unpack DIR   makes DIR the database directory cargo-deny reads
#                                       (deny.toml's db-path), from the snapshot
#   scripts/advisory-db.sh pack CLONE   replaces the snapshot by CLONE, a git clone of
#                                       https://github.com/rustsec/advisory-db (refresh it
#                                       where GitHub is reachable; then commit supply-chain/)
#
# Why a snapshot: cargo-deny fetches the database from GitHub, which the project's machines and
# CI cannot reach (they reach the package registries only). cargo-deny wants the database as a
# git clone in a directory named after the database's URL, and fetches into it before every
# check; the unpacked snapshot is such a clone, whose remote is itself, so the fetch succeeds
# without a network and the check uses the snapshot's advisories. The snapshot's commit and date
# are in supply-chain/advisory-db.commit; advisories published after it are not checked.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SNAPSHOT=$REPO_DIR/supply-chain/advisory-db.tar.gz
COMMIT_FILE=$REPO_DIR/supply-chain/advisory-db.commit
# Where cargo-deny 0.20 (Makefile's DENY_VERSION) keeps https://github.com/rustsec/advisory-db
# inside db-path.
DB_NAME=advisory-db-3157b0e258782691

die() { printf '[advisory-db] error: %s\n' "$*" >&2; exit 1; }

unpack() {
  local dir=$1 db commit date
  read -r commit date <"$COMMIT_FILE"
  db=$dir/$DB_NAME
  rm -rf "$db"
  mkdir -p "$db"
  tar -xzf "$SNAPSHOT" -C "$db" --strip-components=1
  (
    cd "$db"
    git init -q -b main
    git add -A
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date \
      git -c user.name=partlog -c user.email=partlog@localhost commit -q \
      -m "RustSec advisory-db $commit (snapshot of $date)"
    git remote add origin .
  )
  printf '[advisory-db] %s: RustSec advisories of %s (commit %s)\n' "$db" "$date" "$commit"
}

pack() {
  local clone=$1
  [[ -d $clone/crates ]] || die "$clone is not a clone of rustsec/advisory-db"
  git -C "$clone" archive --format=tar --prefix=advisory-db/ HEAD crates rust LICENSE.txt README.md |
    gzip -9n >"$SNAPSHOT"
  git -C "$clone" log -1 --format='%H %cI' >"$COMMIT_FILE"
  printf '[advisory-db] snapshot of %s\n' "$(cat "$COMMIT_FILE")"
}

case ${1:-} in
  unpack) [[ $# == 2 ]] || die "usage: $0 unpack DIR"; unpack "$2" ;;
  pack) [[ $# == 2 ]] || die "usage: $0 pack CLONE"; pack "$2" ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
