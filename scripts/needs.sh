# Sourced by scripts/test.sh and scripts/demo.sh. `install_missing WHY "CMD PACKAGE" ...`
# installs the Debian package of each command that is missing, when the machine allows (root,
# apt-get); for what it could not install it says so, and WHY (what fails without it).
install_missing() {
    local why="$1" missing=() need cmd package
    shift
    for need in "$@"; do
        read -r cmd package <<<"$need"
        command -v "$cmd" >/dev/null || missing+=("$package")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "$(basename "$0"): installing ${missing[*]}"
        { timeout 300 apt-get update -q && timeout 300 apt-get install -y -q "${missing[@]}"; } \
            >/dev/null 2>&1 || echo "$(basename "$0"): could not install ${missing[*]}; $why"
    else
        echo "$(basename "$0"): missing ${missing[*]} (not root or no apt-get); $why"
    fi
}
