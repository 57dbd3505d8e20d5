#!/bin/bash
# Installs the three FTP servers used by the ftpgate integration test lab,
# without starting any daemon on the host.
#
# Usage (as root):  tests/lab/install-servers.sh DESTDIR
#
#   * vsftpd:    installed normally with apt-get (/usr/sbin/vsftpd).
#   * proftpd:   proftpd-core (or proftpd-basic on releases where that package
#                holds the binary) and proftpd-mod-crypto (mod_tls.so, for the
#                FTPS lab) are fetched with `apt-get download` and unpacked
#                with `dpkg -x` into DESTDIR/proftpd
#                (binary: DESTDIR/proftpd/usr/sbin/proftpd,
#                 mod_tls: DESTDIR/proftpd/usr/lib/proftpd/mod_tls.so).
#   * pure-ftpd: pure-ftpd is fetched and unpacked into DESTDIR/pure-ftpd
#                (binary: DESTDIR/pure-ftpd/usr/sbin/pure-ftpd).
#   proftpd and pure-ftpd conflict with vsftpd as Debian packages (they all
#   provide ftp-server), so only their shared-library dependencies are
#   installed with apt-get.
#
# Host changes (all idempotent):
#   * /usr/sbin/policy-rc.d (exit 101) exists while this script runs; created
#     only if absent, and removed again at exit only if this script created it.
#   * system user `ftp` (anonymous FTP) if missing, with an existing home dir
#     (pure-ftpd serves anonymous users from it; the lab bind-mounts the
#     anonymous root over it inside a private mount namespace).
#   * user `ftpgatelab` (password `ftpgatelab`, shell /bin/bash, home
#     /home/ftpgatelab), not listed in /etc/ftpusers.
#   * /etc/pam.d/ftpgate-lab (pam_unix only; used by vsftpd).
#
# Tests find DESTDIR through the environment variable FTPGATE_LAB_SERVERS.
set -euo pipefail

die() { echo "install-servers.sh: $*" >&2; exit 1; }
log() { echo "install-servers.sh: $*"; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 DESTDIR"
[[ $EUID -eq 0 ]] || die "must run as root"

DESTDIR=$(realpath -m -- "$1")
DEBS="$DESTDIR/debs"
LAB_USER=ftpgatelab
LAB_PASS=ftpgatelab
PAM_SERVICE=/etc/pam.d/ftpgate-lab
POLICY=/usr/sbin/policy-rc.d

export DEBIAN_FRONTEND=noninteractive
APT_INSTALL=(apt-get install -y -q --no-install-recommends
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# --- never start daemons while installing ---------------------------------
created_policy=0
cleanup() {
    if [[ $created_policy -eq 1 ]]; then
        rm -f -- "$POLICY"
    fi
}
trap cleanup EXIT
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# created by ftpgate tests/lab/install-servers.sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    created_policy=1
    log "created $POLICY (removed again at exit)"
fi

candidate() { # prints the candidate version of package $1, or nothing
    apt-cache policy -- "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }'
}

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' -- "$1" 2>/dev/null || true)" == installed ]]
}

if [[ -z "$(candidate vsftpd)" ]]; then
    log "no package lists, running apt-get update"
    apt-get update -q
fi

# --- vsftpd: normal install ------------------------------------------------
if ! is_installed vsftpd; then
    log "installing vsftpd"
    "${APT_INSTALL[@]}" vsftpd
fi
[[ -x /usr/sbin/vsftpd ]] || die "/usr/sbin/vsftpd missing after installing vsftpd"

# --- download + unpack proftpd and pure-ftpd ---------------------------------
mkdir -p -- "$DEBS"

# fetch PKG: downloads the candidate .deb of PKG into $DEBS unless already there;
# prints the path of the .deb.
fetch() {
    local pkg=$1 ver arch file
    ver=$(candidate "$pkg")
    [[ -n $ver ]] || die "package $pkg has no installation candidate"
    arch=$(apt-cache show -- "$pkg=$ver" | awk -F': ' '$1 == "Architecture" { print $2; exit }')
    file="$DEBS/${pkg}_${ver//:/%3a}_${arch}.deb"
    if [[ ! -s $file ]] || ! dpkg-deb -f "$file" Package >/dev/null 2>&1; then
        rm -f -- "$DEBS/${pkg}"_*.deb
        (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root -- "$pkg=$ver" >&2)
        [[ -s $file ]] || die "apt-get download $pkg=$ver did not produce $file"
    fi
    echo "$file"
}

# Library dependencies (Depends/Pre-Depends entries named lib* or zlib*,
# first alternative of each group) of the given .deb files, minus anything
# that is itself an FTP server package.
lib_deps() {
    local deb
    for deb in "$@"; do
        dpkg-deb -f "$deb" Depends Pre-Depends | sed -E 's/^[A-Za-z-]+: //'
    done | tr ',' '\n' | while IFS= read -r group; do
        local alt name
        IFS='|' read -ra alts <<<"$group"
        for alt in "${alts[@]}"; do
            name=$(sed -E 's/\(.*\)//; s/:[a-z0-9]+$//; s/[[:space:]]//g' <<<"$alt")
            name=${name%%:*}
            if [[ $name =~ ^(lib|zlib) && ! $name =~ (proftpd|pure-ftpd|ftp-server) ]]; then
                echo "$name"
                break
            fi
        done
    done | sort -u
}

# unpack NAME DEB...: unpacks the .debs into $DESTDIR/NAME (replacing it).
unpack() {
    local name=$1; shift
    local tmp="$DESTDIR/.$name.new" deb
    rm -rf -- "$tmp"
    mkdir -p -- "$tmp"
    for deb in "$@"; do
        dpkg -x "$deb" "$tmp"
    done
    rm -rf -- "${DESTDIR:?}/$name"
    mv -- "$tmp" "$DESTDIR/$name"
}

proftpd_debs=()
for pkg in proftpd-core proftpd-basic proftpd-mod-crypto; do
    # bookworm: proftpd-core holds the binary, proftpd-basic is a metapackage;
    # older releases: proftpd-basic holds the binary and there is no -core.
    # proftpd-mod-crypto holds mod_tls.so (loaded only by the FTPS lab tests).
    if [[ -n "$(candidate "$pkg")" ]]; then
        proftpd_debs+=("$(fetch "$pkg")")
    fi
done
[[ ${#proftpd_debs[@]} -gt 0 ]] || die "neither proftpd-core nor proftpd-basic is available"
pureftpd_debs=("$(fetch pure-ftpd)")

log "unpacking into $DESTDIR/proftpd and $DESTDIR/pure-ftpd"
unpack proftpd "${proftpd_debs[@]}"
unpack pure-ftpd "${pureftpd_debs[@]}"

PROFTPD="$DESTDIR/proftpd/usr/sbin/proftpd"
PUREFTPD="$DESTDIR/pure-ftpd/usr/sbin/pure-ftpd"
[[ -x $PROFTPD ]] || die "$PROFTPD missing after unpacking ${proftpd_debs[*]}"
[[ -x $PUREFTPD ]] || die "$PUREFTPD missing after unpacking ${pureftpd_debs[*]}"

missing=()
for lib in $(lib_deps "${proftpd_debs[@]}" "${pureftpd_debs[@]}"); do
    is_installed "$lib" || missing+=("$lib")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing shared-library dependencies: ${missing[*]}"
    "${APT_INSTALL[@]}" "${missing[@]}"
fi

# The unpacked binaries must resolve all their libraries.
for bin in "$PROFTPD" "$PUREFTPD"; do
    if ldd "$bin" | grep -q 'not found'; then
        ldd "$bin" | grep 'not found' >&2
        die "$bin has unresolved shared libraries"
    fi
done
# proftpd: the plain lab config loads no DSO module (everything it needs is
# compiled in); the FTPS lab loads mod_tls.so, which must resolve. Other modules
# with unresolved libraries only deserve a warning.
TLS_SO="$DESTDIR/proftpd/usr/lib/proftpd/mod_tls.so"
[[ -e $TLS_SO ]] || die "$TLS_SO missing after unpacking ${proftpd_debs[*]}"
if ldd "$TLS_SO" | grep -q 'not found'; then
    ldd "$TLS_SO" | grep 'not found' >&2
    die "$TLS_SO has unresolved shared libraries"
fi
for so in "$DESTDIR"/proftpd/usr/lib/proftpd/*.so; do
    [[ -e $so ]] || continue
    if ldd "$so" 2>/dev/null | grep -q 'not found'; then
        log "warning: $(basename "$so") has unresolved libraries (not used by the lab)"
    fi
done
"$PROFTPD" -v >/dev/null || die "$PROFTPD does not run"
for mod in mod_auth_unix.c mod_facts.c mod_ls.c mod_xfer.c; do
    "$PROFTPD" -l | grep -qx "  $mod" || die "$PROFTPD lacks compiled-in $mod"
done
# pure-ftpd has no version flag; --help prints usage and exits.
"$PUREFTPD" --help >/dev/null 2>&1 || true
"$PUREFTPD" --help 2>&1 | grep -qi 'pure-ftpd' || die "$PUREFTPD does not run"

# --- users ------------------------------------------------------------------
NOLOGIN=/usr/sbin/nologin
[[ -x $NOLOGIN ]] || NOLOGIN=/bin/false
if ! getent passwd ftp >/dev/null; then
    log "creating system user ftp"
    if getent group ftp >/dev/null; then
        useradd --system --gid ftp --home-dir /srv/ftp --no-create-home --shell "$NOLOGIN" ftp
    else
        useradd --system --user-group --home-dir /srv/ftp --no-create-home --shell "$NOLOGIN" ftp
    fi
fi
ftp_home=$(getent passwd ftp | cut -d: -f6)
[[ -n $ftp_home && $ftp_home != / ]] || die "user ftp has an unusable home directory '$ftp_home'"
if [[ ! -d $ftp_home ]]; then
    install -d -m 0755 -o root -g root -- "$ftp_home"
fi

if ! getent passwd "$LAB_USER" >/dev/null; then
    log "creating user $LAB_USER"
    useradd --no-create-home --home-dir "/home/$LAB_USER" --shell /bin/bash "$LAB_USER"
fi
if [[ "$(getent passwd "$LAB_USER" | cut -d: -f7)" != /bin/bash ]]; then
    usermod --shell /bin/bash "$LAB_USER"
fi
lab_home=$(getent passwd "$LAB_USER" | cut -d: -f6)
[[ -n $lab_home && $lab_home != / ]] || die "user $LAB_USER has an unusable home directory '$lab_home'"
if [[ ! -d $lab_home ]]; then
    install -d -m 0755 -o "$LAB_USER" -g "$(id -gn "$LAB_USER")" -- "$lab_home"
fi
# Always (re)set the password, unlock the account, and disable expiry.
echo "$LAB_USER:$LAB_PASS" | chpasswd
passwd -u "$LAB_USER" >/dev/null 2>&1 || true
chage -E -1 -M -1 "$LAB_USER"
grep -qx /bin/bash /etc/shells || die "/bin/bash is not in /etc/shells"
for f in /etc/ftpusers /etc/vsftpd.ftpusers /etc/proftpd/ftpusers; do
    if [[ -f $f ]] && grep -qx "$LAB_USER" "$f"; then
        log "removing $LAB_USER from $f"
        sed -i "/^${LAB_USER}\$/d" "$f"
    fi
done

# --- PAM service for vsftpd (pam_unix only, no session modules) ------------
pam_content='# ftpgate test lab (tests/lab/install-servers.sh): local passwords only.
auth     required pam_unix.so
account  required pam_unix.so
password required pam_deny.so
session  required pam_permit.so'
if [[ ! -f $PAM_SERVICE ]] || [[ "$(cat "$PAM_SERVICE")" != "$pam_content" ]]; then
    printf '%s\n' "$pam_content" >"$PAM_SERVICE"
    chmod 0644 "$PAM_SERVICE"
    log "wrote $PAM_SERVICE"
fi

log "done: vsftpd=/usr/sbin/vsftpd proftpd=$PROFTPD pure-ftpd=$PUREFTPD"
log "export FTPGATE_LAB_SERVERS=$DESTDIR"
