#!/usr/bin/env bash
# Debian packages the validator and tests use. Skips what is already installed; needs root for apt.
set -euo pipefail
need=()
command -v tshark   >/dev/null || need+=(tshark)
command -v capinfos >/dev/null || need+=(tshark)
command -v tcpreplay >/dev/null || need+=(tcpreplay)
command -v tcpdump  >/dev/null || need+=(tcpdump)
command -v ip       >/dev/null || need+=(iproute2)
command -v ethtool  >/dev/null || need+=(ethtool)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; install them (sudo apt-get install ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "system-deps: installed ${need[*]}"
