#!/usr/bin/env bash
# Installs the CUDA 13.0.2 compiler (nvcc 13.0.88) and runtime headers from PyPI into the cache, and prints the
# `export` lines that build coldfuse's `cuda` feature; no GPU, driver or system toolkit is needed to compile.
#   eval "$(scripts/cuda-toolchain.sh)"          # enough for `cargo check/clippy --features cuda` (PTX included)
#   eval "$(scripts/cuda-toolchain.sh --link)"   # also cuBLAS, cuRAND and NVRTC, to link and run a binary
# Idempotent: a second run installs nothing. The versions are those of docker/Dockerfile.cuda's base image
# (nvidia/cuda:13.0.2); the 13.0 PTX this nvcc writes is JIT-compiled by any driver from r580 on.
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU generation the kernels are compiled for.
set -euo pipefail
link=false
[ "${1:-}" = "--link" ] && link=true
cache="${COLDFUSE_CACHE:-$HOME/.cache/coldfuse}"
venv="$cache/cuda-13.0.2"
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
root=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
if [ ! -x "$root/bin/nvcc" ] || [ ! -f "$root/include/crt/host_config.h" ] || [ ! -d "$root/include/cccl" ]; then
  # Every part pinned and --no-deps: nvcc requires crt, nvvm, cccl and the runtime unpinned (the newest would come).
  "$venv/bin/pip" install -q --no-deps nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 >&2
fi
echo "export CUDA_ROOT='$root'"
echo "export PATH='$root/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP='${CUDA_COMPUTE_CAP:-90}'"
if $link; then
  if [ ! -f "$root/lib/libcublas.so.13" ] || [ ! -f "$root/lib/libcurand.so.10" ] || [ ! -f "$root/lib/libnvrtc.so.13" ]; then
    "$venv/bin/pip" install -q --no-deps nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 \
      nvidia-cuda-nvrtc==13.0.88 >&2
  fi
  # The wheels carry only versioned names (libcublas.so.13) and the linker looks for libcublas.so, in
  # $CUDA_ROOT/lib where cudarc's build script points it.
  for lib in cublas cublasLt curand nvrtc cudart; do
    versioned=$(find "$root/lib" -maxdepth 1 -name "lib$lib.so.*" | sort | head -n 1)
    [ -n "$versioned" ] || { echo "lib$lib.so.* is missing from $root/lib" >&2; exit 1; }
    ln -sfn "$(basename "$versioned")" "$root/lib/lib$lib.so"
  done
  # libcuda belongs to the driver. Linked against the driver's own where there is one, else against a stub
  # (every cu* entry point of cuda.h, soname libcuda.so.1) so that a machine without a GPU can link too; the
  # binary then loads the real driver wherever it runs. Both as $root/lib/libcuda.so: cudarc's build script
  # lists its search folders once, and lib/ is there from the start.
  mkdir -p "$root/lib/stubs"
  driver=$({ /sbin/ldconfig -p || ldconfig -p; } 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {p = $NF} END {print p}' || true)
  if [ -n "$driver" ]; then
    ln -sfn "$driver" "$root/lib/libcuda.so"
  else
    if [ ! -f "$root/lib/stubs/libcuda.so" ]; then
      # Both the names the header declares and those its macros map them to (cuMemAlloc -> cuMemAlloc_v2).
      { cat "$root/include/cuda.h"; gcc -E -P -x c "$root/include/cuda.h" -I "$root/include"; } \
        | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
        | sed 's/.*/void &(void) {}/' >"$root/lib/stubs/libcuda.c"
      gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda.c"
    fi
    ln -sfn stubs/libcuda.so "$root/lib/libcuda.so"
  fi
  echo "export LD_LIBRARY_PATH='$root/lib':\"\${LD_LIBRARY_PATH:-}\""
fi
