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
# The lab's transfer and threat-model tests again with ftpgate on the kernel data path (the
# matrix has kernel-path cases of its own, tests/lab_kernel_path.rs tests the pinholes).
FTPGATE_LAB_DATA_PATH=kernel cargo test --release --test lab_gateway --test lab_security -- --nocapture
