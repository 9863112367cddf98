#!/usr/bin/env bash
# SafeCut CPU worker entrypoint (installed as /start.sh by deploy/Dockerfile.cpu).
#
# worker-comfyui >= 5.8.0 starts with a GPU pre-flight (torch.cuda.init(), `exit 1` on failure) and has no
# switch to skip it, so a CPU worker needs its own start script. This one:
#   1. sizes the CPU thread pools to the CPUs this container may really use (cgroup quota + affinity);
#   2. starts ComfyUI with --cpu in the background and writes its PID to /tmp/comfyui.pid (the handler
#      polls ComfyUI only while that process is alive, worker-comfyui >= 5.8.3);
#   3. runs the stock RunPod handler (/handler.py) in the foreground.
# Environment: SERVE_API_LOCALLY=true (local API on :8000, ComfyUI listens on 0.0.0.0), COMFY_LOG_LEVEL
# (default INFO), SAFECUT_THREADS / OMP_NUM_THREADS (override the computed thread count).
set -uo pipefail

log() { echo "safecut-start: $*"; }

# --- CPU threads ---------------------------------------------------------------------------------
# A serverless CPU worker usually sees every host CPU (nproc, /proc/cpuinfo) but may only *use* its vCPU
# quota. torch, ONNX Runtime and llama.cpp size their pools from the visible CPUs, so without this a
# 4-vCPU worker on a 64-core host runs 32-64 threads per pool and is throttled by the CFS quota.
cpu_quota() {
    local quota period cg="${SAFECUT_CGROUP_ROOT:-/sys/fs/cgroup}"   # (the variable is for tests)
    if [ -r "$cg/cpu.max" ]; then                                  # cgroup v2: "<quota|max> <period>"
        read -r quota period < "$cg/cpu.max" || return 1
    elif [ -r "$cg/cpu/cpu.cfs_quota_us" ]; then                   # cgroup v1
        quota=$(cat "$cg/cpu/cpu.cfs_quota_us")
        period=$(cat "$cg/cpu/cpu.cfs_period_us")
    else
        return 1
    fi
    case "$quota" in max|-1|"") return 1 ;; esac
    [ "${period:-0}" -gt 0 ] || return 1
    echo $(( quota / period > 0 ? quota / period : 1 ))           # whole CPUs, rounded down
}

visible=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)       # affinity-aware; nproc honours OMP_*
threads=$visible
if quota=$(cpu_quota) && [ "$quota" -lt "$threads" ]; then
    threads=$quota
fi
export SAFECUT_THREADS="${SAFECUT_THREADS:-$threads}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$SAFECUT_THREADS}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}"
export NUMEXPR_MAX_THREADS="${NUMEXPR_MAX_THREADS:-$OMP_NUM_THREADS}"
log "CPU threads: SafeCut ${SAFECUT_THREADS}, OpenMP ${OMP_NUM_THREADS} (visible CPUs ${visible}, cgroup quota ${quota:-none})"

# --- memory allocator (as the stock image does, when tcmalloc is installed) --------------------------
TCMALLOC="$(ldconfig -p 2>/dev/null | grep -Po 'libtcmalloc.so.\d' | head -n 1 || true)"
if [ -n "$TCMALLOC" ]; then
    export LD_PRELOAD="$TCMALLOC"
fi
# Huge pages for glibc malloc (THP 'madvise' hosts): BEN2's per-call gigabytes fault in 2 MiB at a time
# instead of 4 KiB (INT8 BEN2 at 1024² on 2 cores: 21 s instead of 28 s). Read only by glibc; harmless otherwise.
case ":${GLIBC_TUNABLES:-}:" in
    *:glibc.malloc.hugetlb=*) ;;
    *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac

if command -v comfy-manager-set-mode >/dev/null 2>&1; then
    comfy-manager-set-mode offline || log "could not set ComfyUI-Manager to offline mode"
fi

# --- ComfyUI on CPU + the RunPod handler --------------------------------------------------------------
: "${COMFY_LOG_LEVEL:=INFO}"
COMFY_PID_FILE=/tmp/comfyui.pid
comfy_args=(--cpu --disable-auto-launch --disable-metadata --verbose "$COMFY_LOG_LEVEL" --log-stdout)
handler_args=()
if [ "${SERVE_API_LOCALLY:-false}" = "true" ]; then
    comfy_args+=(--listen)
    handler_args+=(--rp_serve_api --rp_api_host=0.0.0.0)
fi

log "starting ComfyUI (CPU): python -u /comfyui/main.py ${comfy_args[*]}"
python -u /comfyui/main.py "${comfy_args[@]}" &
echo $! > "$COMFY_PID_FILE"

log "starting the RunPod handler"
exec python -u /handler.py "${handler_args[@]}"
