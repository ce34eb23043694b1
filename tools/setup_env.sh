#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with the CPU stack kd_plugin needs.
#
# Usage: bash tools/setup_env.sh
#
# Environment variables:
#   KD_VENV         where the virtual environment lives (default: <repo>/.venv)
#   KD_WHEEL_CACHE  where the built mmcv wheel is kept between clones (default: ~/.cache/kd_plugin/wheels)
#   KD_PYTHON       interpreter that creates the environment (default: python3)
#   KD_TORCH        pip requirement for torch (default: torch==2.13.0, the CPU build on this machine)
#
# mmcv 2.0.1 (the newest release mmyolo 0.6.0 accepts) exists on PyPI only as a source
# distribution. Its setup.py passes -std=c++14, which torch >= 2.1 headers reject, so the
# script builds it once with -std=c++17 and caches the wheel outside the repository. A second
# run with everything in place only checks the stamp file and returns within seconds.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${KD_VENV:-$repo/.venv}
wheel_cache=${KD_WHEEL_CACHE:-$HOME/.cache/kd_plugin/wheels}
python=${KD_PYTHON:-python3}
torch_req=${KD_TORCH:-torch==2.13.0}
mmcv_version=2.0.1

log() { printf '[setup_env] %s\n' "$*" >&2; }

# The stamp records the inputs of the last successful set-up; an unchanged stamp means done.
stamp_inputs=$(cat "$repo/setup.py" "$repo/requirements.txt" "$0"; echo "$torch_req")
stamp=$(printf '%s' "$stamp_inputs" | sha256sum | cut -d' ' -f1)
if [[ -f "$venv/.kd_setup_stamp" && "$(cat "$venv/.kd_setup_stamp")" == "$stamp" ]] \
    && "$venv/bin/python" -c 'import kd_plugin, mmcv.ops, mmyolo' 2>/dev/null; then
    log "environment in $venv is up to date"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating virtual environment in $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip 'setuptools>=64,<81' wheel

log "installing $torch_req"
"${pip[@]}" install --quiet "$torch_req"

# mmcv with compiled CPU ops: reuse a cached wheel, or build one.
mkdir -p "$wheel_cache"
pytag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
# A wheel built against one torch release may not load with another, so the cache is keyed by it.
cache_dir="$wheel_cache/torch-$torch_version"
mkdir -p "$cache_dir"
mmcv_wheel=$(ls "$cache_dir"/mmcv-$mmcv_version-"$pytag"-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$mmcv_wheel" ]]; then
    log "no cached mmcv $mmcv_version wheel for $pytag/torch $torch_version: building it (about 11 minutes on 2 cores)"
    build_dir=$(mktemp -d)
    trap 'rm -rf "$build_dir"' EXIT
    "${pip[@]}" download --quiet --no-deps --no-build-isolation --no-binary :all: -d "$build_dir" "mmcv==$mmcv_version"
    tar -xzf "$build_dir"/mmcv-$mmcv_version.tar.gz -C "$build_dir"
    src="$build_dir/mmcv-$mmcv_version"
    sed -i 's/-std=c++14/-std=c++17/g' "$src/setup.py"
    "${pip[@]}" install --quiet ninja numpy
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${pip[@]}" wheel --no-deps --no-build-isolation -w "$build_dir/dist" "$src"
    built=$(ls "$build_dir"/dist/mmcv-$mmcv_version-*.whl)
    # Copy under a temporary name, then rename, so an interrupted copy never looks like a wheel.
    cp "$built" "$cache_dir/.partial"
    mmcv_wheel="$cache_dir/$(basename "$built")"
    mv "$cache_dir/.partial" "$mmcv_wheel"
    log "cached $mmcv_wheel"
fi
log "installing $(basename "$mmcv_wheel")"
"${pip[@]}" install --quiet "$mmcv_wheel"

log "installing kd_plugin and its requirements"
"${pip[@]}" install --quiet -r "$repo/requirements.txt"
"${pip[@]}" install --quiet --no-deps -e "$repo"

"$venv/bin/python" -c 'import kd_plugin, mmcv.ops, mmdet, mmyolo; print("kd_plugin", kd_plugin.__version__, "| mmcv", mmcv.__version__, "| mmdet", mmdet.__version__, "| mmyolo", mmyolo.__version__)'
echo "$stamp" > "$venv/.kd_setup_stamp"
log "done: activate with 'source $venv/bin/activate'"
