#!/bin/bash
# Checks the Debian package end to end on this machine, as root. It installs and purges the
# package: run it on a build or CI machine, not on a firewall that has ftpgate installed.
#
#   deploy/debian/check.sh install   build it (build.sh), lintian (no errors), dpkg -i, then check
#                                    the binary, the manual page, the unit, the conffile, the
#                                    system user and the completions
#   deploy/debian/check.sh purge     dpkg --purge, then check that nothing the package owned or
#                                    its scripts made is left, except what policy keeps (the user)
#   deploy/debian/check.sh           both, with the lab test of the installed package
#                                    (tests/lab_package.rs) in between
#   deploy/debian/check.sh abandon   after a failure between install and purge: purge without
#                                    checks, and remove the user if install made it
#
# CI (.ci/run) runs `install` before the test suite, whose tests/lab_package.rs needs the
# installed package, and `purge` after it. What install found is kept in target/debian/check/
# for purge. Installs what it needs (cargo-deb, lintian, man-db, systemd for systemd-analyze)
# when it is missing. Every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=target/debian/check
unit=/usr/lib/systemd/system/ftpgate.service
export DEBIAN_FRONTEND=noninteractive

fail() { echo "deploy/debian/check.sh: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs and purges the package)"

tools() {
	local missing=()
	command -v lintian >/dev/null || missing+=(lintian)
	command -v man >/dev/null || missing+=(man-db)
	command -v systemd-analyze >/dev/null || missing+=(systemd)
	if [ ${#missing[@]} -gt 0 ]; then
		timeout 600 apt-get update -qq
		timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	cargo deb --version >/dev/null 2>&1 || timeout 1200 cargo install cargo-deb --locked
}

install() {
	if dpkg-query -W -f='${Status}' ftpgate 2>/dev/null | grep -q 'installed'; then
		fail "ftpgate is already installed here; purge it first (dpkg --purge ftpgate)"
	fi
	tools
	rm -rf "$state" target/debian/*.deb
	mkdir -p "$state"
	timeout 1800 deploy/debian/build.sh --output target/debian
	local deb
	deb=$(ls target/debian/ftpgate_*.deb)

	# lintian: errors fail; warnings and the overridden tags (deploy/debian/lintian-overrides,
	# each with its reason) are listed for the log. lintian 2.116 exits 2 with --show-overrides
	# whatever it found, hence a second run for the listing.
	timeout 600 lintian --fail-on error --tag-display-limit 0 "$deb" >"$state/lintian.txt" 2>&1 ||
		fail "lintian reports errors: $(cat "$state/lintian.txt")"
	timeout 600 lintian --show-overrides --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true
	ok "lintian: no errors, $(grep -c '^W:' "$state/lintian.txt" || true) warnings not overridden"

	getent passwd ftpgate >/dev/null || touch "$state/user-made-here"
	timeout 300 dpkg -i "$deb"
	dpkg-query -L ftpgate >"$state/files"
	ok "installed $(basename "$deb"): $(wc -l <"$state/files") paths"

	local version
	version=$(dpkg-query -W -f='${Version}' ftpgate)
	[ "$(command -v ftpgate)" = /usr/sbin/ftpgate ] || fail "ftpgate is not /usr/sbin/ftpgate on PATH"
	[ "$(ftpgate --version)" = "ftpgate ${version%-*}" ] || fail "ftpgate --version says '$(ftpgate --version)', package $version"
	ok "ftpgate --version: $(ftpgate --version)"

	[ "$(man -w ftpgate)" = /usr/share/man/man8/ftpgate.8.gz ] || fail "man -w ftpgate: $(man -w ftpgate 2>&1)"
	local page
	page=$(MANWIDTH=100 man --warnings ftpgate 2>"$state/man-warnings.txt")
	[ ! -s "$state/man-warnings.txt" ] || fail "man ftpgate warns: $(cat "$state/man-warnings.txt")"
	for section in OPTIONS "INTERCEPTION MODES" CONFIGURATION SIGNALS "EXIT STATUS" FILES METRICS SECURITY; do
		grep -q "^$section\$" <<<"$page" || fail "man ftpgate has no $section section"
	done
	ok "man -w ftpgate: $(man -w ftpgate), renders without warnings"

	# The unit: valid, disabled until the admin enables it, not started.
	timeout 120 systemd-analyze verify "$unit" >"$state/verify.txt" 2>&1 || fail "systemd-analyze verify: $(cat "$state/verify.txt")"
	[ ! -s "$state/verify.txt" ] || fail "systemd-analyze verify warns: $(cat "$state/verify.txt")"
	local enabled
	enabled=$(systemctl --root=/ is-enabled ftpgate.service 2>&1 || true)
	[ "$enabled" = disabled ] || fail "the unit should be installed disabled, it is: $enabled"
	ok "systemd-analyze verify $unit: clean; installed $enabled"

	dpkg-query -W -f='${Conffiles}\n' ftpgate | grep -q '^ /etc/ftpgate/ftpgate.yaml ' || fail "/etc/ftpgate/ftpgate.yaml is not a conffile"
	cmp -s /etc/ftpgate/ftpgate.yaml examples/ftpgate.yaml || fail "/etc/ftpgate/ftpgate.yaml differs from examples/ftpgate.yaml"
	/usr/sbin/ftpgate --check-config /etc/ftpgate/ftpgate.yaml >/dev/null || fail "the installed configuration does not validate"
	ok "conffile /etc/ftpgate/ftpgate.yaml: registered, validates"

	local account
	account=$(getent passwd ftpgate) || fail "postinst made no ftpgate user"
	IFS=: read -r _ _ uid _ _ home shell <<<"$account"
	[ "$uid" -lt 1000 ] && [ "$shell" = /usr/sbin/nologin ] && [ "$home" = /nonexistent ] ||
		fail "ftpgate is not a system account without login: $account"
	getent group ftpgate >/dev/null || fail "postinst made no ftpgate group"
	ok "system user: $account"

	# bash: the completion offers the flags; zsh: the file is a completion for ftpgate.
	local offered
	offered=$(bash -c 'source /usr/share/bash-completion/completions/ftpgate
		COMP_WORDS=(ftpgate --check-con); COMP_CWORD=1; _ftpgate ftpgate --check-con ftpgate
		echo "${COMPREPLY[*]}"')
	[ "$offered" = "--check-config" ] || fail "bash completion of --check-con offers '$offered'"
	[ "$(head -1 /usr/share/zsh/vendor-completions/_ftpgate)" = "#compdef ftpgate" ] || fail "_ftpgate is not a zsh completion"
	ok "completions: bash completes --check-con to $offered, zsh #compdef ftpgate"

	for f in nftables/ftpgate-redirect.nft nftables/ftpgate-tproxy.nft nftables/ftpgate-tproxy-routing.sh pf-anchors/openbsd-pf.conf; do
		cmp -s "$f" "/usr/share/ftpgate/$f" || fail "/usr/share/ftpgate/$f differs from $f"
	done
	for f in grafana/ftpgate-dashboard.json prometheus/ftpgate-alerts.yml prometheus/ftpgate-scrape.yml; do
		cmp -s "deploy/$f" "/usr/share/doc/ftpgate/examples/$f" || fail "/usr/share/doc/ftpgate/examples/$f differs"
	done
	ok "rules in /usr/share/ftpgate, Grafana and Prometheus files in /usr/share/doc/ftpgate/examples"
}

purge() {
	[ -s "$state/files" ] || fail "no $state/files: run '$0 install' first"
	timeout 300 dpkg --purge ftpgate
	! dpkg-query -W -f='${Status}' ftpgate 2>/dev/null | grep -q 'installed' || fail "ftpgate is still installed"
	# Each path the package had is gone, unless another package still owns it (/usr/share/man).
	local left=()
	while IFS= read -r path; do
		[ "$path" = /. ] && continue
		if [ -e "$path" ] || [ -L "$path" ]; then
			[ -d "$path" ] && [ ! -L "$path" ] && dpkg-query -S "$path" >/dev/null 2>&1 && continue
			left+=("$path")
		fi
	done <"$state/files"
	# What the maintainer scripts made: the unit's enablement state and masks.
	while IFS= read -r path; do left+=("$path"); done < <(find /etc/systemd /var/lib/systemd -name 'ftpgate*' 2>/dev/null)
	[ ! -e /etc/ftpgate ] || left+=(/etc/ftpgate)
	[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
	ok "purged: none of the $(wc -l <"$state/files") paths is left, nor unit state or /etc/ftpgate"

	# Debian keeps system users on purge: files they own may remain, and a reused uid would
	# inherit them.
	getent passwd ftpgate >/dev/null || fail "purge removed the ftpgate user (Debian keeps it)"
	if [ -e "$state/user-made-here" ]; then
		deluser --system --quiet ftpgate 2>/dev/null
		getent group ftpgate >/dev/null && delgroup --system --quiet ftpgate
		ok "the ftpgate user was kept by the purge (policy); removed it since this check made it"
	else
		ok "the ftpgate user was kept by the purge (policy); it was here before this check"
	fi
	rm -rf "$state"
}

# After a failure in between: purge, and remove the user if this check made it.
abandon() {
	dpkg --purge ftpgate >/dev/null 2>&1 || true
	if [ -e "$state/user-made-here" ]; then
		deluser --system --quiet ftpgate 2>/dev/null || true
		delgroup --system --quiet ftpgate 2>/dev/null || true
	fi
}

case "${1:-all}" in
install) install ;;
purge) purge ;;
abandon) abandon ;;
all)
	tests/lab/setup.sh
	trap abandon EXIT
	install
	timeout 900 env FTPGATE_LAB=require cargo test --release --test lab_package -- --nocapture
	purge
	trap - EXIT
	;;
*) fail "usage: $0 [install|purge|abandon]" ;;
esac
