# shellcheck shell=bash
#
# nginx with the Nchan module, for the benchmark's `nchan` job (Nchan beside boardcast
# in the same run; issue 11). Source this file:
#
#   . scripts/lib/nchan.sh
#   if nchan_ensure_installed; then   # exports NGINX_BIN and NCHAN_MODULE
#     ...
#   else                              # sets NCHAN_WHY: one line saying why not
#     ...
#   fi
#
# Only Debian's packages are used: `nginx` and `libnginx-mod-nchan` (bookworm has Nchan
# 1.3.6 built against its nginx 1.22; `nginx-light` is a transitional package there that
# only pulls `nginx`). They are installed with apt-get when missing and we are root; the
# bench itself starts nginx in a directory of its own (never the system service).

# Where Debian's module packages put their shared objects.
NCHAN_MODULE_DEFAULT=/usr/lib/nginx/modules/ngx_nchan_module.so

# Sets NGINX_BIN and NCHAN_MODULE when both exist; returns 1 otherwise.
nchan_find() {
  NGINX_BIN=${NGINX_BIN:-}
  if [ -z "$NGINX_BIN" ] || [ ! -x "$NGINX_BIN" ]; then
    # /usr/sbin is not on every user's PATH.
    NGINX_BIN=$(command -v nginx 2>/dev/null || true)
    if [ -z "$NGINX_BIN" ] && [ -x /usr/sbin/nginx ]; then
      NGINX_BIN=/usr/sbin/nginx
    fi
  fi
  NCHAN_MODULE=${NCHAN_MODULE:-$NCHAN_MODULE_DEFAULT}
  export NGINX_BIN NCHAN_MODULE
  [ -n "$NGINX_BIN" ] && [ -x "$NGINX_BIN" ] && [ -f "$NCHAN_MODULE" ]
}

# Makes sure nginx and the Nchan module are there, installing what is missing with
# apt-get when root. On failure NCHAN_WHY says why, in one line, for the report.
# shellcheck disable=SC2034 # NCHAN_WHY is read by the caller
nchan_ensure_installed() {
  NCHAN_WHY=
  if nchan_find; then
    return 0
  fi
  local packages=()
  if [ -z "$NGINX_BIN" ]; then
    packages+=(nginx)
  fi
  if [ ! -f "$NCHAN_MODULE" ]; then
    packages+=(libnginx-mod-nchan)
  fi
  if [ "$(id -u)" -ne 0 ]; then
    NCHAN_WHY="${packages[*]} not installed, and installing needs root (apt-get install ${packages[*]})"
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    NCHAN_WHY="${packages[*]} not installed, and there is no apt-get here"
    return 1
  fi
  echo "nchan.sh: installing ${packages[*]} with apt-get ..." >&2
  # Debian's nginx postinst starts the system service (port 80) unless a policy-rc.d
  # forbids it (invoke-rc.d's documented hook; exit 101 = "action not allowed"). Add one
  # for the install only, when none is there; the subshell's trap removes it even if
  # apt-get is interrupted.
  if ! (
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      trap 'rm -f "$policy"' EXIT
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
    fi
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
  ) >&2; then
    NCHAN_WHY="apt-get install ${packages[*]} failed (see the output above)"
    return 1
  fi
  if ! nchan_find; then
    NCHAN_WHY="installed ${packages[*]}, but nginx or $NCHAN_MODULE is still missing"
    return 1
  fi
}
