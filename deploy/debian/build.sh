#!/bin/sh
# Builds the Debian package target/debian/ftpgate_<version>-1_<arch>.deb from this tree: the
# release binary, its manual page and shell completions (ftpgate --generate target/assets), then
# cargo deb with the metadata of Cargo.toml's [package.metadata.deb]. Needs cargo-deb:
#   cargo install cargo-deb --locked
# Arguments go to cargo deb (e.g. --output DIR). CARGO_BUILD_JOBS limits the build's jobs.
set -eu
cd "$(dirname "$0")/../.."
cargo build --release --bin ftpgate
# cargo deb finds the binary through target/release/ wherever CARGO_TARGET_DIR points; the
# generated files have a fixed place, the one the asset list names.
"${CARGO_TARGET_DIR:-target}/release/ftpgate" --generate target/assets >/dev/null
# The release profile keeps line tables for backtraces; the package ships the binary stripped.
cargo deb --no-build --strip "$@"
