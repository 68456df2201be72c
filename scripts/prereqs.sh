# Sourced by the scripts here: installs what building and testing need when
# it is missing, from Debian's packages (apt-get update once, before the
# first install). Nothing happens on a machine that has everything.

_prereqs_apt_updated=0

# need_deb COMMAND PACKAGE: install PACKAGE if COMMAND is not on PATH.
need_deb() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "$0: $1 is missing; install Debian's $2 (or run as root to let this script do it)" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" != 0 ] && sudo=sudo
  if [ "$_prereqs_apt_updated" = 0 ]; then
    echo "$0: apt-get update" >&2
    $sudo apt-get update -qq
    _prereqs_apt_updated=1
  fi
  echo "$0: installing $2 (for $1)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# What every build of the workspace needs: protoc, for the etcd client's
# protobuf definitions (the etcd registry backend is built into the CLI and
# the examples).
need_build_tools() {
  need_deb protoc protobuf-compiler
}
