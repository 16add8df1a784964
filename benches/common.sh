# Shared by the bench scripts (sourced, not run).

# Installs Debian package $2 when command $1 is missing (with sudo unless root).
need_apt() { # COMMAND PACKAGE
    command -v "$1" >/dev/null && return
    echo "installing $2" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$2" >/dev/null
}

# A TCP port on 127.0.0.1 that is free now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
