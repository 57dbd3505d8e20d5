#!/bin/bash
# Installs what the lab tests need on Debian, as root: nftables, iproute2, the clients (curl,
# lftp, python3) and the three FTP servers (vsftpd installed; proftpd and pure-ftpd unpacked
# under target/lab-servers, since the three conflict as packages). No daemon is started.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "tests/lab/setup.sh: must run as root (it installs packages)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
	# Package installs must not start services outside the lab.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
apt-get update -qq
# systemd: systemd-analyze verifies the shipped unit and its drop-ins (tests/deploy_files.rs).
# strace: the benchmark counts ftpgate's system calls per GiB (benches/lab/profile.rs).
apt-get install -y -qq --no-install-recommends nftables iproute2 curl lftp python3 procps util-linux coreutils systemd strace >/dev/null
"$root/tests/lab/install-servers.sh" "${FTPGATE_LAB_SERVERS:-$root/target/lab-servers}"
echo "lab setup done"
