#!/usr/bin/env bash
# Fetch Docker Compose v2 (the Go binary) from Debian trixie's docker-compose .deb, for the
# differential tests and benchmarks. No trixie source is added to the system: apt runs with a
# throw-away configuration in a temporary folder. The binary works stand-alone (`docker-compose
# config`) without any Docker engine.
#   usage: fetch-compose-v2.sh DEST_DIR      -> DEST_DIR/docker-compose
set -euo pipefail
dest=${1:?usage: fetch-compose-v2.sh DEST_DIR}
suite=${COMPOSE2_SUITE:-trixie}
if [[ -x $dest/docker-compose ]] && "$dest/docker-compose" version >/dev/null 2>&1; then
  exit 0
fi
mirror=""
if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || { echo "fetch-compose-v2: no Debian mirror in apt's sources" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$tmp/sources.list"
opts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq
(cd "$tmp" && apt-get "${opts[@]}" download docker-compose >/dev/null)
dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/x"
install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$dest/docker-compose"
"$dest/docker-compose" version
