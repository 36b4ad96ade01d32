#!/usr/bin/env bash
# Compile-and-link check of the `cuda` feature on a machine without a GPU or a system CUDA toolkit.
#
# 1. pip-installs NVIDIA's CUDA 13.4 wheels (nvcc, cicc, headers, cudart, nvrtc, cuBLAS, cuRAND)
#    into a venv under $LOOKAHEAD_CUDA_CACHE (default ~/.cache/lookahead-cuda), once;
# 2. assembles a CUDA_HOME there: the wheels' bin/include/nvvm, a lib/ with the unversioned
#    `.so` names the linker wants, and lib/stubs/libcuda.so, a stub of the driver API built from
#    cudarc's own list of driver functions (every function returns CUDA_ERROR_STUB_LIBRARY, like
#    the toolkit's stub; the wheels ship no driver). Only the linker sees it;
# 3. runs `cargo build -p lookahead-cli --features cuda` (candle-kernels compiles its kernels with
#    nvcc for CUDA_COMPUTE_CAP, default 90 = H100/H200), `cargo clippy -p lookahead-model
#    -p lookahead-cli --features cuda --all-targets -D warnings` (skip: LOOKAHEAD_CUDA_CLIPPY=0), and
#    checks that the binary, started with the stub driver, refuses `--device cuda` with an error,
#    not a panic (by hand, then tests/scorer_cli.rs). The first run takes about 17 min on 2 cores.
#
# What it proves: the CUDA build compiles and links. What it does not: nothing runs on a GPU.
# The binary links libcuda.so.1, libcudart, libcublas and libcurand dynamically
# (candle's cudarc `dynamic-linking`), so a `cuda` build starts only where those libraries are
# installed (the NVIDIA driver plus the CUDA 13 runtime libraries), even for `--device cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lookahead-target}"
CACHE="${LOOKAHEAD_CUDA_CACHE:-$HOME/.cache/lookahead-cuda}"
VENV="$CACHE/venv"
CUDA="$CACHE/cuda"
WHEELS=(
  nvidia-cuda-nvcc==13.4.92 nvidia-cuda-crt==13.4.92 nvidia-nvvm==13.4.92
  nvidia-cuda-runtime==13.4.92 nvidia-cuda-nvrtc==13.4.92 nvidia-cuda-cccl==13.3.4.3.1
  nvidia-cublas==13.4.3.11 nvidia-curand==10.4.5.25
)
say() { printf '== %s\n' "$*"; }

# 1. the toolkit wheels
stamp="$VENV/.lookahead-wheels"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${WHEELS[*]}" ]]; then
  say "pip install ${WHEELS[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${WHEELS[@]}"
  echo "${WHEELS[*]}" >"$stamp"
else
  say "CUDA wheels already in $VENV"
fi
CU13="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
[[ -x "$CU13/bin/nvcc" ]] || { echo "no nvcc in $CU13/bin" >&2; exit 1; }

# 2. CUDA_HOME: links into the wheels, plus the unversioned library names and the driver stub
say "CUDA_HOME=$CUDA"
mkdir -p "$CUDA/lib/stubs"
for d in bin include nvvm; do ln -sfn "$CU13/$d" "$CUDA/$d"; done
for f in "$CU13"/lib/*; do
  name="$(basename "$f")"
  ln -sfn "$f" "$CUDA/lib/$name"
  [[ "$name" =~ ^(lib[A-Za-z0-9_]+)\.so\.[0-9]+$ ]] && ln -sfn "$name" "$CUDA/lib/${BASH_REMATCH[1]}.so"
done
cargo fetch -q
cudarc_version="$(sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)"
driver_rs="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$cudarc_version"/src/driver/sys/mod.rs | head -n1)"
stub_c="$CUDA/lib/stubs/libcuda-stub-$cudarc_version.c"
if [[ ! -f "$CUDA/lib/stubs/libcuda.so.1" || ! -f "$stub_c" ]]; then
  say "driver stub from $(grep -o '^pub unsafe fn cu[A-Za-z0-9_]*' "$driver_rs" | sort -u | wc -l) functions of cudarc $cudarc_version"
  { echo '/* Link-time stand-in for libcuda.so.1: every entry point returns CUDA_ERROR_STUB_LIBRARY. */'
    sed -n 's/^pub unsafe fn \(cu[A-Za-z0-9_]*\)(.*/int \1(void) { return 34; }/p' "$driver_rs" | sort -u; } >"$stub_c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so.1" "$stub_c"
  ln -sfn libcuda.so.1 "$CUDA/lib/stubs/libcuda.so"
fi

export CUDA_HOME="$CUDA" CUDA_PATH="$CUDA" PATH="$CUDA/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
say "$(nvcc --version | tail -n2 | head -n1); CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

# 3. build, lint, and the binary's answer to --device cuda without a driver
say "cargo build -p lookahead-cli --features cuda"
start=$SECONDS
cargo build -p lookahead-cli --features cuda
bin="$CARGO_TARGET_DIR/debug/lookahead"
say "cargo build took $((SECONDS - start)) s: $bin ($(du -h "$bin" | cut -f1))"
if [[ "${LOOKAHEAD_CUDA_CLIPPY:-1}" != 0 ]]; then
  say "cargo clippy -p lookahead-model -p lookahead-cli --features cuda --all-targets -- -D warnings"
  cargo clippy -p lookahead-model -p lookahead-cli --features cuda --all-targets -q -- -D warnings
fi
say "dynamic CUDA libraries of the binary:"
readelf -d "$bin" | sed -n 's/.*Shared library: \[\(lib\(cuda\|cudart\|nvrtc\|cublas\|cublasLt\|curand\)\.so[^]]*\)\].*/  \1/p'
if msg="$(env -u LD_LIBRARY_PATH "$bin" --help 2>&1 >/dev/null)"; then
  say "the binary starts with this machine's own CUDA libraries"
else
  say "without CUDA libraries on the loader path it cannot start: $msg"
fi
say "lookahead scorer --device cuda, with the stub driver (no GPU): must fail with an error, not a panic"
set +e
out="$(LD_LIBRARY_PATH="$CUDA/lib/stubs:$CUDA/lib" RUST_BACKTRACE=0 timeout 60 "$bin" scorer \
  --artifact "$CACHE/no-such-artifact" --listen 127.0.0.1:0 --device cuda 2>&1)"
rc=$?
set -e
printf '%s\n' "$out" | sed 's/^/  /'
if [[ $rc == 0 || $rc -ge 101 ]] || grep -q "panicked" <<<"$out"; then
  echo "FAIL: expected an error exit (rc 1), got rc $rc" >&2
  exit 1
fi
say "cargo test -p lookahead-cli --features cuda --test scorer_cli, with the stub driver"
LD_LIBRARY_PATH="$CUDA/lib/stubs:$CUDA/lib" cargo test -q -p lookahead-cli --features cuda --test scorer_cli
say "ok: the cuda build compiles, links, and reports a missing GPU as an error (rc $rc)"
