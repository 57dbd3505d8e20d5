#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS; exits non-zero if any target crashes.
#
#   fuzz/run.sh SECONDS
#
# Corpora grow in fuzz/corpus/<target> (seeded from the committed fuzz/seeds/<target>),
# reproducers land in fuzz/artifacts/<target>, libFuzzer logs in fuzz/target/logs/<target>.log.
# Reproduce a crash with: cargo +nightly fuzz run --fuzz-dir fuzz <target> <artifact>
# (or run fuzz/target/<host triple>/release/<target> <artifact>).
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS" >&2
    exit 2
fi
secs=$1

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir/.."

targets=(command_parser reply_parser address_codecs session)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build --fuzz-dir "$fuzz_dir"
# The targets are run from this one build (as `cargo fuzz run` would run them, minus its
# rebuild), so all of them test the same snapshot of the sources.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=$fuzz_dir/target/$triple/release
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

mkdir -p "$fuzz_dir/target/logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=$fuzz_dir/corpus/$t
    artifacts=$fuzz_dir/artifacts/$t
    log=$fuzz_dir/target/logs/$t.log
    mkdir -p "$corpus" "$artifacts"
    if [[ -d $fuzz_dir/seeds/$t ]]; then
        cp -- "$fuzz_dir/seeds/$t"/* "$corpus/"
    fi
    extra=()
    if [[ -f $fuzz_dir/dicts/$t.dict ]]; then
        extra+=("-dict=$fuzz_dir/dicts/$t.dict")
    fi
    echo "=== $t: ${secs}s (log: $log)"
    rc=0
    "$bin_dir/$t" -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "${extra[@]}" "$corpus" >"$log" 2>&1 || rc=$?
    # The last status line ("#N DONE cov: C ft: F corp: ...") and the execution count.
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [[ $rc -ne 0 ]]; then
        failed+=("$t")
        echo "!!! $t failed (exit $rc); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        summary+=("$t: FAILED exit=$rc execs=${execs:-?} $status")
    else
        summary+=("$t: ok execs=${execs:-?} $status")
    fi
done

echo "=== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashing targets: ${failed[*]}; reproducers:" >&2
    for t in "${failed[@]}"; do
        ls -1d "$fuzz_dir/artifacts/$t"/* >&2 || true
    done
    exit 1
fi
