#!/bin/sh
# Policy routing for ftpgate-tproxy.nft, and for transparent active mode (active.source:
# original) with ftpgate-redirect.nft: packets carrying MARK are delivered to local sockets.
# Usage: ftpgate-tproxy-routing.sh add|del [MARK] [TABLE]   (defaults: 0x2121 121)
set -eu
action=${1:-add}
mark=${2:-0x2121}
table=${3:-121}
case "$action" in
add)
	ip -4 rule add fwmark "$mark" lookup "$table"
	ip -4 route add local 0.0.0.0/0 dev lo table "$table"
	ip -6 rule add fwmark "$mark" lookup "$table"
	ip -6 route add local ::/0 dev lo table "$table"
	;;
del)
	ip -4 rule del fwmark "$mark" lookup "$table" || true
	ip -4 route flush table "$table" || true
	ip -6 rule del fwmark "$mark" lookup "$table" || true
	ip -6 route flush table "$table" || true
	;;
*)
	echo "usage: $0 add|del [MARK] [TABLE]" >&2
	exit 2
	;;
esac
