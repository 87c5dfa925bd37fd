#!/usr/bin/env bash
# Install (or update) the inspection station on an RK3588 board running Debian or Ubuntu arm64.
#
#   sudo deploy/install.sh [options]        run from a checkout of the station's repository
#   deploy/install.sh --dry-run [options]   print every action, change nothing (no root needed)
#
# Idempotent: every step checks the current state first and acts only when it differs, so a
# second run changes nothing. Options:
#   --dry-run                 print the actions that would run; exit 1 if a problem would stop the install
#   --soc NAME                skip the SoC check and assume NAME (rk3588 / rk3588s; also env STATION_SOC)
#   --compatible-file FILE    device-tree compatible file to read (default /proc/device-tree/compatible)
#   --python PATH             Python for the runtime venv (3.11 or 3.12; default: first found)
#   --librknnrt FILE          install this librknnrt.so to /usr/lib (must match the toolkit version)
#   --rknn-version X.Y.Z      rknn-toolkit-lite2 version (default 2.5.0)
#   --wheelhouse DIR          install Python packages from DIR only (offline board)
#   --camera-if IFACE         GigE Vision camera port: check MTU and receive ring, print advice
#   --cpu-only                no NPU pieces (toolkit, librknnrt): ONNX Runtime on the CPU
#   --no-performance          do not pin NPU/DDR/CPU governors to performance
#   --start                   (re)start the service at the end
#   --root DIR                install files under DIR; skip system commands (packaging, tests)
#   -h, --help                this text
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

DRY_RUN=0
SOC_OVERRIDE=${STATION_SOC:-}
COMPATIBLE_FILE=/proc/device-tree/compatible
PYTHON=""
LIBRKNNRT_SRC=""
RKNN_VERSION=2.5.0
WHEELHOUSE=""
CAMERA_IF=""
PERFORMANCE=1
CPU_ONLY=0
START=0
ROOT=""

SERVICE_USER=station
SERVICE_GROUPS=(render video plugdev)
PREFIX=/opt/station
CONF_DIR=/etc/station
STATE_DIR=/var/lib/station
LIBRKNNRT_DEST=/usr/lib/librknnrt.so
APT_PACKAGES=(python3 python3-venv python3-dev libusb-1.0-0 ethtool sqlite3 ca-certificates)

CHANGES=0
PROBLEMS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --soc) SOC_OVERRIDE=${2:?--soc needs a value}; shift ;;
        --compatible-file) COMPATIBLE_FILE=${2:?--compatible-file needs a path}; shift ;;
        --python) PYTHON=${2:?--python needs a path}; shift ;;
        --librknnrt) LIBRKNNRT_SRC=${2:?--librknnrt needs a file}; shift ;;
        --rknn-version) RKNN_VERSION=${2:?--rknn-version needs a version}; shift ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
        --camera-if) CAMERA_IF=${2:?--camera-if needs an interface}; shift ;;
        --no-performance) PERFORMANCE=0 ;;
        --cpu-only) CPU_ONLY=1 ;;
        --start) START=1 ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# ---- output and actions ------------------------------------------------------------------------
say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok    %s\n' "$*"; }
warn() { printf 'WARN  %s\n' "$*"; }
problem() {
    # A condition that stops a real install. In a dry run, collect it and keep going so the
    # whole plan is printed.
    PROBLEMS+=("$*")
    printf 'ERROR %s\n' "$*"
    if ((!DRY_RUN)); then exit 1; fi
}

quote() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }

# act CMD...: a change to the system. Printed always; executed unless --dry-run.
act() {
    CHANGES=$((CHANGES + 1))
    if ((DRY_RUN)); then
        say "[dry-run] $(quote "$@")"
    else
        say "+ $(quote "$@")"
        # Explicit, because set -e is off inside functions called from an `if` condition.
        "$@" || { printf 'ERROR failed (status %d): %s\n' "$?" "$(quote "$@")"; exit 1; }
    fi
}

# sys_act CMD...: a change outside the file tree (packages, users, systemd, kernel). With
# --root it is printed and skipped: those belong to the target system, not to DIR.
sys_act() {
    if [[ -n $ROOT ]]; then
        say "[skipped: --root] $(quote "$@")"
        return 0
    fi
    act "$@"
}

# install_file SRC DEST MODE: copy when content or mode differ. Returns 0 if it changed.
install_file() {
    local src=$1 dest=$ROOT$2 mode=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
        ok "$2 unchanged"
        return 1
    fi
    act install -D -m "$mode" "$src" "$dest"
    return 0
}

# install_new SRC DEST OWNER GROUP MODE: a file the site then owns (copied once, never overwritten).
install_new() {
    local src=$1 dest=$ROOT$2 owner=$3 group=$4 mode=$5
    if [[ -n $ROOT ]]; then
        act install -m "$mode" "$src" "$dest"
    else
        act install -o "$owner" -g "$group" -m "$mode" "$src" "$dest"
    fi
}

# ensure_dir DIR OWNER GROUP MODE
ensure_dir() {
    local dir=$ROOT$1 owner=$2 group=$3 mode=$4
    if [[ -n $ROOT ]]; then owner=$(id -un); group=$(id -gn); fi
    if [[ -d $dir ]] && [[ $(stat -c '%U:%G %a' "$dir") == "$owner:$group ${mode#0}" ]]; then
        ok "$1 exists ($owner:$group $mode)"
        return 0
    fi
    act install -d -o "$owner" -g "$group" -m "$mode" "$dir"
}

# ---- 1. SoC ------------------------------------------------------------------------------------
check_soc() {
    step "SoC"
    if [[ -n $SOC_OVERRIDE ]]; then
        case $SOC_OVERRIDE in
            rk3588 | rk3588s) warn "SoC check overridden: assuming $SOC_OVERRIDE (the NPU runtime will refuse to run if this is wrong)" ;;
            *) problem "--soc $SOC_OVERRIDE: the station's NPU path supports rk3588 and rk3588s only" ;;
        esac
        return 0
    fi
    if [[ ! -r $COMPATIBLE_FILE ]]; then
        problem "cannot read $COMPATIBLE_FILE: not a device-tree (ARM) system. This installer targets RK3588 boards; pass --soc rk3588 to override"
        return 0
    fi
    # The file holds NUL-separated strings, most specific first: "radxa,rock-5b" "rockchip,rk3588".
    local compatible soc
    compatible=$(tr '\0' '\n' <"$COMPATIBLE_FILE")
    soc=$(grep -E -o -m1 '^rockchip,rk3588s?$' <<<"$compatible" | cut -d, -f2 || true)
    if [[ -z $soc ]]; then
        problem "SoC is not an RK3588 (compatible: $(tr '\n' ' ' <<<"$compatible")); pass --soc rk3588 to override"
        return 0
    fi
    ok "SoC $soc (board: $(head -n1 <<<"$compatible"))"
}

check_arch() {
    local arch
    arch=$(uname -m)
    if [[ $arch == aarch64 ]]; then
        ok "architecture aarch64"
    else
        warn "architecture $arch: rknn-toolkit-lite2 has aarch64 wheels only; the NPU backend cannot be installed here"
    fi
}

# ---- 2. packages -------------------------------------------------------------------------------
ensure_packages() {
    step "System packages"
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}" "$@"; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            ok "package $pkg installed"
        else
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        sys_act apt-get update
        sys_act env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# ---- 3. Python (rknn-toolkit-lite2 2.5.0 ships cp37..cp312 wheels; the station needs >= 3.11)
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

choose_python() {
    step "Python"
    local candidates=() cand version
    # The distribution's Python first: a venv must not hang off a user's pyenv/conda shim.
    if [[ -n $PYTHON ]]; then candidates=("$PYTHON"); else
        candidates=(/usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3 python3.12 python3.11)
    fi
    for cand in "${candidates[@]}"; do
        command -v "$cand" >/dev/null 2>&1 || continue
        version=$(python_version "$cand") || continue
        case $version in
            3.11 | 3.12)
                PYTHON=$(command -v "$cand")
                PYTHON_VERSION=$version
                ok "Python $version at $PYTHON"
                return 0
                ;;
            *) say "skip  $cand is Python $version (need 3.11 or 3.12)" ;;
        esac
    done
    problem "no Python 3.11 or 3.12 found (rknn-toolkit-lite2 has wheels up to 3.12; the station needs 3.11+). Install one (e.g. apt install python3.11-venv, or the container recipe in deploy/container) and pass --python"
    PYTHON=python3.12
    PYTHON_VERSION=3.12
}

# ---- 4. user, groups, directories --------------------------------------------------------------
ensure_user() {
    step "Service user and directories"
    local group
    for group in "${SERVICE_GROUPS[@]}"; do
        if getent group "$group" >/dev/null; then
            ok "group $group exists"
        else
            sys_act groupadd --system "$group"
        fi
    done
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        ok "user $SERVICE_USER exists"
    else
        sys_act useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "inspection station" "$SERVICE_USER"
    fi
    local have
    have=$(id -nG "$SERVICE_USER" 2>/dev/null || true)
    for group in "${SERVICE_GROUPS[@]}"; do
        if [[ " $have " == *" $group "* ]]; then
            ok "user $SERVICE_USER in group $group"
        else
            sys_act usermod -a -G "$group" "$SERVICE_USER"
        fi
    done
    # Config is root-owned and only readable by the service; state belongs to the service.
    ensure_dir "$CONF_DIR" root "$SERVICE_USER" 0750
    ensure_dir "$STATE_DIR" "$SERVICE_USER" "$SERVICE_USER" 0750
    local sub
    # recipes/ is state, not config: the HMI's recipe editor activates versions by writing there.
    for sub in recipes images models backups; do
        ensure_dir "$STATE_DIR/$sub" "$SERVICE_USER" "$SERVICE_USER" 0750
    done
    ensure_dir "$PREFIX" root root 0755
}

ensure_config() {
    step "Configuration (never overwritten)"
    local dest=$CONF_DIR/station.toml
    if [[ -f $ROOT$dest ]]; then
        ok "$dest present (kept as is)"
    else
        install_new "$SCRIPT_DIR/station.example.toml" "$dest" root "$SERVICE_USER" 0640
    fi
    local recipe name
    for recipe in "$SOURCE_DIR"/recipes/*.toml; do
        [[ -e $recipe ]] || continue
        name=$(basename "$recipe")
        if [[ -f $ROOT$STATE_DIR/recipes/$name ]]; then
            ok "$STATE_DIR/recipes/$name present (kept as is)"
        else
            install_new "$recipe" "$STATE_DIR/recipes/$name" "$SERVICE_USER" "$SERVICE_USER" 0640
        fi
    done
    if install_file "$SCRIPT_DIR/README.md" "$PREFIX/deploy/README.md" 0644; then :; fi
}

# ---- 5. runtime venv ---------------------------------------------------------------------------
source_digest() {
    # Content hash of what pip would install: a changed checkout means reinstall, an unchanged
    # one means nothing to do (the package version alone does not change between commits).
    (cd "$SOURCE_DIR" && find pyproject.toml station db hmi models -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null |
        sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64
}

pip_args() {
    if [[ -n $WHEELHOUSE ]]; then printf '%s\n' --no-index --find-links "$WHEELHOUSE"; fi
}

ensure_venv() {
    step "Runtime venv $PREFIX/venv"
    local venv=$PREFIX/venv
    if [[ -n $ROOT ]]; then
        say "[skipped: --root] runtime venv (pip installs belong to the target system)"
        return 0
    fi
    if [[ -x $venv/bin/python ]] && [[ $(python_version "$venv/bin/python") == "$PYTHON_VERSION" ]]; then
        ok "venv exists (Python $PYTHON_VERSION)"
    else
        [[ ! -e $venv ]] || act rm -rf "$venv"
        act "$PYTHON" -m venv "$venv"
    fi
    local -a extra
    mapfile -t extra < <(pip_args)
    local digest stamp=$venv/.station-source.sha256
    digest=$(source_digest)
    if [[ -f $stamp ]] && [[ $(<"$stamp") == "$digest" ]]; then
        ok "station installed from this checkout (${digest:0:12})"
    else
        act "$venv/bin/pip" install --disable-pip-version-check "${extra[@]}" "$SOURCE_DIR"
        if ((DRY_RUN)); then
            say "[dry-run] record ${digest:0:12} in $stamp"
        else
            printf '%s\n' "$digest" >"$stamp"
        fi
    fi
    local have=""
    [[ ! -x $venv/bin/python ]] || have=$("$venv/bin/python" -c \
        'import importlib.metadata as m; print(m.version("rknn-toolkit-lite2"))' 2>/dev/null || true)
    if ((CPU_ONLY)); then
        ok "rknn-toolkit-lite2 not installed (--cpu-only)"
    elif [[ $have == "$RKNN_VERSION" ]]; then
        ok "rknn-toolkit-lite2 $have"
    elif [[ $(uname -m) != aarch64 ]]; then
        if ((DRY_RUN)); then
            act "$venv/bin/pip" install --disable-pip-version-check "${extra[@]}" "rknn-toolkit-lite2==$RKNN_VERSION"
            warn "(that pip install has no wheel for $(uname -m): on this machine it would fail)"
        else
            warn "skipping rknn-toolkit-lite2: no wheel for $(uname -m); the station will use ONNX Runtime on the CPU"
        fi
    else
        act "$venv/bin/pip" install --disable-pip-version-check "${extra[@]}" "rknn-toolkit-lite2==$RKNN_VERSION"
    fi
}

# ---- 6. NPU runtime library ----------------------------------------------------------------------
librknnrt_version() {
    # The library embeds "librknnrt version: 2.5.0 (<commit>@<date>)".
    grep -a -o -m1 'librknnrt version: [0-9][0-9.]*' "$1" 2>/dev/null | head -n1 | awk '{print $3}'
}

ensure_librknnrt() {
    step "NPU runtime library $LIBRKNNRT_DEST"
    local dest=$ROOT$LIBRKNNRT_DEST version
    if [[ -n $LIBRKNNRT_SRC ]]; then
        [[ -f $LIBRKNNRT_SRC ]] || { problem "--librknnrt $LIBRKNNRT_SRC: no such file"; return 0; }
        version=$(librknnrt_version "$LIBRKNNRT_SRC")
        if [[ $version != "$RKNN_VERSION" ]]; then
            problem "--librknnrt $LIBRKNNRT_SRC is version ${version:-unknown}, rknn-toolkit-lite2 is $RKNN_VERSION: they must match (get librknnrt.so from rknn-toolkit2 v$RKNN_VERSION, rknpu2/runtime/Linux/librknn_api/aarch64/)"
            return 0
        fi
        if install_file "$LIBRKNNRT_SRC" "$LIBRKNNRT_DEST" 0644; then
            sys_act ldconfig
        fi
    fi
    if [[ ! -f $dest ]]; then
        if ((DRY_RUN)) && [[ -n $LIBRKNNRT_SRC ]]; then return 0; fi
        problem "$LIBRKNNRT_DEST is missing: copy librknnrt.so $RKNN_VERSION from rknn-toolkit2 v$RKNN_VERSION (rknpu2/runtime/Linux/librknn_api/aarch64/) and pass --librknnrt FILE"
        return 0
    fi
    version=$(librknnrt_version "$dest")
    if [[ $version == "$RKNN_VERSION" ]]; then
        ok "librknnrt $version matches rknn-toolkit-lite2 $RKNN_VERSION"
    else
        problem "$LIBRKNNRT_DEST is version ${version:-unknown}, rknn-toolkit-lite2 is $RKNN_VERSION: they must match (pass --librknnrt FILE with the $RKNN_VERSION library)"
    fi
}

check_npu_device() {
    if [[ -e /dev/dri/renderD129 ]]; then
        ok "NPU device /dev/dri/renderD129 present"
    else
        warn "/dev/dri/renderD129 not found: the rknpu driver is not loaded (vendor BSP kernel needed; mainline 'rocket' does not serve librknnrt). The station will fall back to the CPU"
    fi
}

# ---- 7. cameras: udev, usbfs, GigE receive buffers -------------------------------------------------
ensure_camera_settings() {
    step "Camera support (USB3 Vision udev rules, usbfs memory, GigE Vision buffers)"
    if install_file "$SCRIPT_DIR/udev/60-station-usb3vision.rules" /etc/udev/rules.d/60-station-usb3vision.rules 0644; then
        sys_act udevadm control --reload-rules
        sys_act udevadm trigger --subsystem-match=usb --action=add
    fi
    if install_file "$SCRIPT_DIR/tmpfiles/station.conf" /etc/tmpfiles.d/station.conf 0644; then
        sys_act systemd-tmpfiles --create /etc/tmpfiles.d/station.conf
    fi
    if install_file "$SCRIPT_DIR/sysctl/60-station-gige.conf" /etc/sysctl.d/60-station-gige.conf 0644; then
        sys_act sysctl --quiet --load /etc/sysctl.d/60-station-gige.conf
    fi
    if [[ -n $CAMERA_IF ]]; then
        local mtu_file=/sys/class/net/$CAMERA_IF/mtu mtu
        if [[ ! -r $mtu_file ]]; then
            warn "camera interface $CAMERA_IF not found (ip -br link lists them)"
        else
            mtu=$(<"$mtu_file")
            if ((mtu >= 9000)); then
                ok "$CAMERA_IF MTU $mtu (jumbo frames)"
            else
                warn "$CAMERA_IF MTU is $mtu: set 9000 for GigE Vision (and the camera's GevSCPSPacketSize to match), e.g."
                say "      nmcli connection modify <camera-connection> 802-3-ethernet.mtu 9000 && nmcli connection up <camera-connection>"
            fi
            if command -v ethtool >/dev/null; then
                say "      receive ring (max/current): $(ethtool -g "$CAMERA_IF" 2>/dev/null | awk '/^RX:/{print $2}' | paste -sd/ -); raise with: ethtool -G $CAMERA_IF rx <max>"
            fi
        fi
    fi
}

ensure_performance() {
    step "Clocks for steady latency"
    local dest=/etc/tmpfiles.d/station-performance.conf
    if ((PERFORMANCE)); then
        if install_file "$SCRIPT_DIR/tmpfiles/station-performance.conf" "$dest" 0644; then
            sys_act systemd-tmpfiles --create "$dest"
        fi
    elif [[ -f $ROOT$dest ]]; then
        act rm -f "$ROOT$dest"
    else
        ok "governors left to the kernel (--no-performance)"
    fi
}

# ---- 8. systemd unit -----------------------------------------------------------------------------
ensure_service() {
    step "systemd units (station, daily database backup)"
    local unit changed=0
    for unit in station.service station-backup.service station-backup.timer; do
        if install_file "$SCRIPT_DIR/$unit" "/etc/systemd/system/$unit" 0644; then changed=1; fi
    done
    ((changed == 0)) || sys_act systemctl daemon-reload
    for unit in station.service station-backup.timer; do
        if [[ -z $ROOT ]] && systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            ok "$unit enabled"
        else
            sys_act systemctl enable "$unit"
        fi
    done
    if ((START)); then
        sys_act systemctl restart station.service
    else
        say "note  not started: edit $CONF_DIR/station.toml, run '$PREFIX/venv/bin/station doctor --config $CONF_DIR/station.toml', then 'systemctl start station'"
    fi
}

# ---- main ----------------------------------------------------------------------------------------
main() {
    if ((!DRY_RUN)) && [[ -z $ROOT ]] && ((EUID != 0)); then
        echo "install.sh: run as root (sudo), or with --dry-run to see the plan" >&2
        exit 1
    fi
    if [[ -n $ROOT ]]; then mkdir -p "$ROOT"; ROOT=$(cd "$ROOT" && pwd); fi
    ((DRY_RUN)) && say "dry run: nothing will be changed"
    say "source $SOURCE_DIR${ROOT:+, installing under $ROOT}"
    check_soc
    check_arch
    choose_python
    local pyvenv=()
    [[ $PYTHON_VERSION == "$(python_version /usr/bin/python3 || true)" ]] || pyvenv=("python$PYTHON_VERSION-venv")
    ensure_packages "${pyvenv[@]}"
    ensure_user
    ensure_config
    ensure_venv
    if ((CPU_ONLY)); then
        step "NPU"
        ok "skipped (--cpu-only): inference runs on ONNX Runtime on the CPU"
    else
        ensure_librknnrt
        check_npu_device
    fi
    ensure_camera_settings
    ensure_performance
    ensure_service

    step "Summary"
    if ((CHANGES == 0)); then
        say "nothing to change: the station is installed as this checkout describes"
    elif ((DRY_RUN)); then
        say "$CHANGES action(s) would run"
    else
        say "$CHANGES action(s) done"
    fi
    if ((${#PROBLEMS[@]})); then
        say "${#PROBLEMS[@]} problem(s) would stop the install:"
        printf '  - %s\n' "${PROBLEMS[@]}"
        exit 1
    fi
}

main
