# shellcheck shell=bash
# Shared helpers for the ovz.containers setup and test scripts.  Source it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Every helper is safe to call repeatedly; the "ensure" ones return at once
# when there is nothing to do.  Nothing here sets shell options: the caller
# chooses (the scripts use `set -euo pipefail`).

# The Python the project targets: the distribution's own (Debian 12's 3.11,
# Debian 13's 3.13), never a pyenv shim.
OVZ_PYTHON="${OVZ_PYTHON:-/usr/bin/python3}"

# The Debian releases the scripts know.
OVZ_DEBIAN_RELEASES="12 13"

# Print this host's Debian major release ("12", "13"), from /etc/debian_version
# (a testing/sid host says "trixie/sid" there: then VERSION_ID from os-release).
ovz_debian_release() {
    local v
    v="$(cut -d. -f1 /etc/debian_version 2>/dev/null || true)"
    # shellcheck disable=SC1091  # the host's own file
    case "$v" in
        [0-9]*) printf '%s\n' "$v" ;;
        *) (. /etc/os-release 2>/dev/null && printf '%s\n' "${VERSION_ID:-}") ;;
    esac
}

# Print the codename of a Debian major release (12 -> bookworm, 13 -> trixie).
ovz_debian_codename() {
    case "${1:-$(ovz_debian_release)}" in
        12) echo bookworm ;;
        13) echo trixie ;;
        *) return 1 ;;
    esac
}

# Fail with one line unless this is a Debian release the scripts support.
ovz_require_debian() {
    case " $OVZ_DEBIAN_RELEASES " in
        *" $(ovz_debian_release) "*) return 0 ;;
    esac
    ovz_die "this host is not Debian 12 or 13 (/etc/debian_version: $(cat /etc/debian_version 2>/dev/null || echo none))"
}

# Print the "major.minor" of $OVZ_PYTHON (3.11 on Debian 12, 3.13 on Debian 13).
ovz_python_version() {
    "$OVZ_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

ovz_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
ovz_die() { printf '%s: ERROR: %s\n' "${0##*/}" "$*" >&2; return 1; }

# Print the repository root (the collection root): the parent of scripts/.
ovz_repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}

# Print the path of the project's virtualenv ($OVZ_VENV overrides it).
ovz_venv() {
    printf '%s\n' "${OVZ_VENV:-$(ovz_repo_root)/.venv}"
}

# Create the venv with $OVZ_PYTHON if it is missing or broken, and pip-install
# requirements.txt only when that file's sha256 differs from the stamp kept in
# the venv.  Prints nothing when up to date.  Activate it yourself if you want:
#   ovz_ensure_venv && . "$(ovz_venv)/bin/activate"
ovz_ensure_venv() {
    local venv req want have
    venv="$(ovz_venv)"
    req="$(ovz_repo_root)/requirements.txt"
    [ -f "$req" ] || { ovz_die "missing $req"; return 1; }
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        ovz_log "creating venv $venv with $OVZ_PYTHON"
        rm -rf "$venv"
        "$OVZ_PYTHON" -m venv "$venv" || { ovz_die "'$OVZ_PYTHON -m venv' failed (is python3-venv installed?)"; return 1; }
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    have="$(cat "$venv/.ovz-requirements.sha256" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        ovz_log "installing $req into $venv"
        "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" \
            || { ovz_die "pip install -r $req failed"; return 1; }
        printf '%s\n' "$want" >"$venv/.ovz-requirements.sha256"
    fi
    ovz_link_system_seccomp "$venv"
}

# libseccomp's Python binding is Debian's python3-seccomp (PyPI has none): the venv runs the same
# interpreter as /usr/bin/python3, so the binding's one extension module is linked into it.
ovz_link_system_seccomp() {
    local venv="$1" suffix site module
    suffix="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" || return 1
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')" || return 1
    module="/usr/lib/python3/dist-packages/seccomp$suffix"
    [ -f "$module" ] || { ovz_die "missing $module (apt-get install python3-seccomp)"; return 1; }
    ln -sfn "$module" "$site/seccomp$suffix"
}

# The packages the project needs (host tools, test peers, VM platform), one per
# line: the same names on Debian 12 and 13.
ovz_apt_packages() {
    printf '%s\n' \
        busybox-static debootstrap nftables lxc e2fsprogs xfsprogs quota util-linux \
        iproute2 rsync python3-venv python3-dev hyperfine sysbench fio iperf3 dpkg-dev \
        openssh-server openssh-client qemu-system-x86 qemu-utils zstd xz-utils tar \
        procps psmisc iptables bridge-utils shellcheck python3-pyroute2 python3-seccomp lxcfs \
        systemd-container gcc libc6-dev
}

# Print the packages (from the arguments, or ovz_apt_packages) not installed.
ovz_apt_missing() {
    local p
    # shellcheck disable=SC2046  # one word per package
    [ "$#" -gt 0 ] || set -- $(ovz_apt_packages)
    for p in "$@"; do
        case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" in
            ii*) ;;
            *) printf '%s\n' "$p" ;;
        esac
    done
}

# Install the packages (from the arguments, or ovz_apt_packages) that are
# missing; runs apt-get update + install only if something is missing.
ovz_ensure_apt() {
    local missing
    missing="$(ovz_apt_missing "$@")"
    [ -n "$missing" ] || return 0
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    ovz_log "installing:" $missing
    local opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
    DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" update || { ovz_die "apt-get update failed"; return 1; }
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install --no-install-recommends $missing \
        || { ovz_die "apt-get install failed"; return 1; }
}

# ansible-test (2.19) runs each sanity test in its own managed venv under
# ~/.ansible/test/venv, and bootstraps pip into each one with a script it
# downloads from ci-files.testing.ansible.com, which the build machines cannot
# reach.  Seed its cache with an equivalent stand-in that runs pip from the
# PyPI wheel, so `ansible-test sanity --python X.Y` works with PyPI alone.
# Call with the venv active (or after ovz_ensure_venv).  Idempotent.
ovz_ansible_test_offline() {
    local venv py ver cache
    venv="$(ovz_venv)"
    py="$venv/bin/python"
    ver="$("$py" - <<'EOF'
import sys
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="%d.%d" % sys.version_info[:2]))["pip"])
EOF
)" || { ovz_die "cannot ask ansible-test for its pip version"; return 1; }
    cache="$HOME/.ansible/test/cache"
    [ -f "$cache/get_pip_${ver//./_}.py" ] && [ -f "$cache/pip-$ver-py3-none-any.whl" ] && return 0
    mkdir -p "$cache"
    "$py" -m pip download --disable-pip-version-check -q --no-deps "pip==$ver" -d "$cache" \
        || { ovz_die "cannot download pip $ver"; return 1; }
    cat >"$cache/get_pip_${ver//./_}.py.tmp" <<EOF
# Offline stand-in for https://ci-files.testing.ansible.com/ansible-test/get-pip-$ver.py,
# written by ovz.containers scripts/lib.sh: runs pip from the wheel beside it.
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, "pip-$ver-py3-none-any.whl"))
from pip._internal.cli.main import main  # noqa: E402

_args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + _args))
EOF
    mv "$cache/get_pip_${ver//./_}.py.tmp" "$cache/get_pip_${ver//./_}.py"
}
