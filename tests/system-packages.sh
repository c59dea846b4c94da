#!/usr/bin/env bash
# The Debian packages the tests run for real: Prometheus and Alertmanager (tests/integration/
# test_prometheus.py), kubectl, whose built-in kustomize renders k8s/ (tests/test_deployment.py), and chromium,
# which renders the HTML of driftstream report (tests/streams/test_report.py).
# Installed when missing; a machine that cannot install them fails here, in one line, not in a test.
set -euo pipefail
declare -A needs=([prometheus]=prometheus [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager
                  [kubectl]=kubernetes-client [chromium]=chromium)
missing=()
for command in "${!needs[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${needs[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests need the Debian packages: $packages(no apt-get here: install them, then run make test again)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing the Debian packages the tests run: $packages"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $packages >/dev/null
