#!/bin/bash
# Runs the whole test suite. As root it first installs what the lab needs (tests/lab/setup.sh);
# without root the lab tests each print one line saying they were skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
	tests/lab/setup.sh
else
	echo "tests/run.sh: not root, lab tests will be skipped (run: sudo env \"PATH=\$PATH\" tests/run.sh)"
fi
cargo test --release --all-targets -- --nocapture
# The lab's tests that move data through ftpgate, and its threat-model tests, again with ftpgate
# on the kernel data path (the matrix has kernel-path cases of its own, tests/lab_kernel_path.rs
# tests the pinholes). A test that proves something only the relay does pins the relay path
# itself. Not repeated here: lab_ftps (TLS data channels), lab_beyond (ftpgate's own data
# sockets) and lab_admin (running byte counts) are relay-only; the lab tests that never open a
# data connection (lab_order, lab_pipelining, lab_telnet, lab_destinations) would prove nothing
# new.
FTPGATE_LAB_DATA_PATH=kernel cargo test --release --test lab_gateway --test lab_security --test lab_route \
	--test lab_feat --test lab_transparent_active --test lab_halfclose --test lab_operations -- --nocapture
