#!/usr/bin/env bash
# Install the Debian packages that tunelab's test suite needs:
#   openssh-server  real sshd servers on loopback for the remote training service tests
#                   (ssh-agent and ssh-keygen come with the client, which it depends on)
#
# As root, installs whatever is missing (one `apt-get update`, then `apt-get install`).
# Otherwise, lists what is missing with the command to install it, and exits 1 if anything is.
# When everything is present, it only checks and returns at once.
set -euo pipefail

PACKAGES=(openssh-server)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: this script needs Debian's dpkg and apt-get." >&2
    echo "Install these (or your system's equivalents) by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

missing=()
for package in "${PACKAGES[@]}"; do
    if ! is_installed "$package"; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-system-deps: missing Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

# Check again: apt-get can succeed while leaving a package unconfigured.
for package in "${missing[@]}"; do
    if ! is_installed "$package"; then
        echo "install-system-deps: $package did not install" >&2
        exit 1
    fi
done
echo "install-system-deps: done"
