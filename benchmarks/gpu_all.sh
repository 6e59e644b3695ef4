#!/usr/bin/env bash
# Every GPU figure of every benchmark in one run, on a machine with CUDA and no package index.
#
#   bash benchmarks/gpu_all.sh [--quick] [--with-cpu] [--install-only]
#
#   --quick         fewer steps, clicks and runs (a smoke run; the figures are noisier)
#   --with-cpu      the CPU figures too, and segment_memory.py (no GPU figure): minutes longer
#   --install-only  install what is missing and check the samples; needs no GPU
#
# Python: $PYTHON, else .venv/bin/python when there, else python3. Its torch (pyproject's floor, with
# CUDA) is used as it is, never replaced. What else pyproject.toml's dependencies name and that Python
# lacks is installed with pip --no-index from the wheelhouse brought along, $WHEELS (default wheels/ at
# the repository root; `make wheels` fills it), into .gpu_site/pyX.Y on PYTHONPATH: the Python environment
# itself is not changed, and torch is pinned to the version there so pip cannot pull another. The engine
# runs from this tree (PYTHONPATH), so the figures are those of the code that is here; nothing is built.
# The real CT sample lung1: $SSL3D_CACHE/samples (ssl3d's cache layout), else $WHEELS/samples, else
# ~/.cache/ssl3d/samples. Nothing is fetched: the benchmarks run with PIP_NO_INDEX=1.
#
# Runs voco_step.py, vf_step.py, segment_speed.py, click_latency.py and inspect_speed.py on CUDA alone (their CPU
# figures are measured by `make bench` on the 2-core machine the CPU goals are for), and voco_samples.py and vf_samples.py
# whole (their GPU rows are information; their targets are CPU ones). The output goes to the terminal
# and to $OUT/gpu_all.log when $OUT is set, else benchmarks/gpu_all.log; it ends with a summary of every
# `target` line. Environment: PYTHON, WHEELS, SSL3D_CACHE as above; OUT for the log.
#
# Exit status: 0 every benchmark ran (a `short` target is a result, not a failure); 1 a benchmark
# crashed (non-zero exit); 2 the set-up is incomplete (no torch, no CUDA, a missing package and no
# wheelhouse for it, no sample).
set -euo pipefail

QUICK=0 WITH_CPU=0 INSTALL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --with-cpu) WITH_CPU=1 ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "gpu_all.sh: unknown option '$arg' (--quick, --with-cpu, --install-only, --help)" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [[ -n "${OUT:-}" ]]; then LOG=$OUT/gpu_all.log; else LOG=$REPO/benchmarks/gpu_all.log; fi
mkdir -p "$(dirname "$LOG")"

die() {
  echo "gpu_all: $*" >&2
  exit 2
}

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
  elif [[ -x "$REPO/.venv/bin/python" ]]; then
    PY=$REPO/.venv/bin/python
  else
    PY=python3
  fi
  command -v "$PY" >/dev/null 2>&1 || die "no Python '$PY' (set PYTHON=/path/to/python, the one with torch)"
}

# torch imports, meets the floor, and (unless --install-only) sees a CUDA device. Sets TORCH_VERSION, GPU.
check_torch() {
  local out rc=0
  out=$("$PY" - "$INSTALL_ONLY" <<'EOF'
import re, sys, warnings
warnings.simplefilter("ignore")  # e.g. torch's "Failed to initialize NumPy" before numpy is installed
floor = re.search(r'"torch\s*>=\s*([0-9.]+)', open("pyproject.toml").read()).group(1)
try:
    import torch
except Exception as exc:  # a broken install raises anything
    print(f"torch does not import in {sys.executable}: {type(exc).__name__}: {exc}")
    sys.exit(3)
release = tuple(int(p) for p in re.findall(r"\d+", torch.__version__.split("+")[0])[:2])
if release < tuple(int(p) for p in floor.split(".")[:2]):
    print(f"torch {torch.__version__} in {sys.executable} is older than the engine's floor {floor}")
    sys.exit(3)
if not torch.cuda.is_available():
    if sys.argv[1] == "1":
        print(f"{torch.__version__}\tno CUDA device (--install-only)")
        sys.exit(0)
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    print(f"no CUDA device: torch {torch.__version__} in {sys.executable} ({built}) sees none. These are the GPU "
          "figures: run this on a machine with a GPU, or set PYTHON to the Python whose torch has CUDA; "
          "the CPU figures come from `make bench`.")
    sys.exit(3)
name = torch.cuda.get_device_name(0)
print(f"{torch.__version__}\t{name}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
EOF
  ) || rc=$?
  [[ $rc -eq 0 ]] || die "$out"
  TORCH_VERSION=${out%%$'\t'*}
  GPU=${out#*$'\t'}
}

# pyproject.toml's dependencies (torch aside) that are absent or outside their range, one pip argument a
# line; with "import" as argument, imports each instead and prints where it came from.
deps() {
  "$PY" - "$1" <<'EOF'
import importlib, importlib.metadata as md, os, re, sys
from ssl3d.requirements import Requirement

MODULES = {"pyyaml": "yaml", "pillow": "PIL", "pynrrd": "nrrd", "simpleitk": "SimpleITK", "scipy": "scipy.ndimage"}
block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", open("pyproject.toml").read(), re.S | re.M).group(1)
failed = False
for spec in re.findall(r'"([^"]+)"', block):
    name, rest = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", spec).groups()
    if name.lower() == "torch":
        continue
    low, high = re.search(r">=\s*([^,\s]+)", rest), re.search(r"<\s*([^,=\s]+)", rest)
    requirement = Requirement(name, low and low.group(1), high and high.group(1))
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        version = None
    if sys.argv[1] == "missing":
        if not requirement.satisfied_by(version):
            print(requirement.pip_arg)
        continue
    module = MODULES.get(name.lower(), name.lower().replace("-", "_"))
    try:
        where = getattr(importlib.import_module(module), "__file__", None) or "?"
    except Exception as exc:
        print(f"  {name:<12} {version or '-':<10} import {module} FAILED: {type(exc).__name__}: {exc}")
        failed = True
        continue
    print(f"  {name:<12} {version or '-':<10} {os.path.dirname(where)}")
sys.exit(1 if failed else 0)
EOF
}

# Installs the missing distributions, and what they need that is missing, from $WHEELS into $SITE.
install_missing() {
  local -a missing=("$@") pip files
  [[ -d "$WHEELS" ]] || die "missing: ${missing[*]}; no wheelhouse at $WHEELS: run \`make wheels\` where a package index is reachable and bring wheels/ along (or set WHEELS=DIR)"
  local help=""
  help=$("$PY" -m pip install --help 2>/dev/null) || true
  if [[ "$help" == *--report* ]]; then
    pip=("$PY" -m pip)
  else  # pip older than 22.2 (or none): the pip wheel from the wheelhouse runs as it is
    files=("$WHEELS"/pip-*.whl)
    [[ -f "${files[0]}" ]] || die "the pip of $PY is missing or older than 22.2 and $WHEELS has no pip wheel (make wheels adds one)"
    pip=("$PY" "${files[0]}/pip")
  fi
  "$PY" -c "import lzma" 2>/dev/null || die "$PY has no lzma module, which the LZMA-zipped wheels of the wheelhouse need"
  local tmp
  tmp=$(mktemp -d)
  echo "torch==$TORCH_VERSION" >"$tmp/torch-pin.txt"
  local -a flags=(--disable-pip-version-check --no-input --no-index --find-links "$WHEELS" --only-binary=:all:)
  echo "installing from $WHEELS into $SITE: ${missing[*]} (and what they need; torch stays $TORCH_VERSION)"
  "${pip[@]}" install "${flags[@]}" --quiet --dry-run --report "$tmp/report.json" -c "$tmp/torch-pin.txt" "${missing[@]}" ||
    die "pip cannot satisfy ${missing[*]} from $WHEELS with the packages already there (see its message above)"
  mapfile -t files < <("$PY" -c '
import json, sys, urllib.parse, urllib.request
for item in json.load(open(sys.argv[1]))["install"]:
    print(urllib.request.url2pathname(urllib.parse.urlparse(item["download_info"]["url"]).path))
' "$tmp/report.json")
  if [[ ${#files[@]} -gt 0 ]]; then
    printf '  %s\n' "${files[@]##*/}"
    mkdir -p "$SITE"
    "${pip[@]}" install "${flags[@]}" --quiet --no-deps --no-compile --upgrade --target "$SITE" "${files[@]}" ||
      die "pip could not install into $SITE (see its message above)"
  fi
  rm -rf "$tmp"
}

# SSL3D_CACHE for the samples; fails when lung1 is not there (nothing is fetched).
find_samples() {
  if [[ -n "${SSL3D_CACHE:-}" ]]; then
    if [[ ! -f "$SSL3D_CACHE/samples/lung1_image.nrrd" && -f "$SSL3D_CACHE/lung1_image.nrrd" && "$(basename "$SSL3D_CACHE")" == samples ]]; then
      SSL3D_CACHE=$(dirname "$SSL3D_CACHE")  # the samples folder itself was named
    fi
  elif [[ -f "$WHEELS/samples/lung1_image.nrrd" ]]; then
    SSL3D_CACHE=$WHEELS
  fi
  [[ -n "${SSL3D_CACHE:-}" ]] && export SSL3D_CACHE
  SAMPLES=$("$PY" -c 'from ssl3d.data.samples import cache_dir; print(cache_dir() / "samples")')
  [[ -f "$SAMPLES/lung1_image.nrrd" && -f "$SAMPLES/lung1_label.nrrd" ]] ||
    die "the CT sample lung1 is not in $SAMPLES: bring it along (make wheels puts it into wheels/samples) or set SSL3D_CACHE=DIR with DIR/samples/lung1_image.nrrd and lung1_label.nrrd"
}

main() {
  echo "gpu_all: $(date -u '+%Y-%m-%d %H:%M UTC') on ${HOSTNAME:-?}; tree $(git describe --always --dirty 2>/dev/null || echo '(no git)')"
  pick_python
  check_torch
  local pyver
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "python: $PY ($pyver), torch $TORCH_VERSION; GPU: $GPU"

  WHEELS=${WHEELS:-$REPO/wheels}
  [[ "$WHEELS" == /* ]] || WHEELS=$REPO/$WHEELS
  SITE=$REPO/.gpu_site/py$pyver
  export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$WHEELS PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

  local listed
  local -a missing=()
  listed=$(deps missing) || die "cannot read the dependencies from pyproject.toml (above)"
  [[ -z "$listed" ]] || mapfile -t missing <<<"$listed"
  if [[ ${#missing[@]} -gt 0 ]]; then
    install_missing "${missing[@]}"
    listed=$(deps missing) || die "cannot read the dependencies from pyproject.toml (above)"
    [[ -z "$listed" ]] || die "still missing after the install: ${listed//$'\n'/ }"
  fi
  echo "packages (pyproject's dependencies as imported):"
  deps import || die "a dependency does not import (above)"
  local engine
  engine=$("$PY" -c 'import ssl3d; print(ssl3d.__file__)')
  [[ "$engine" == "$REPO/ssl3d/"* ]] || die "ssl3d imports from $engine, not from this tree"
  find_samples
  echo "samples: $SAMPLES"
  if [[ $INSTALL_ONLY -eq 1 ]]; then
    echo "gpu_all: ready (--install-only); PYTHONPATH=$PYTHONPATH"
    return 0
  fi

  local device=cuda
  [[ $WITH_CPU -eq 1 ]] && device=auto
  local -a runs
  if [[ $QUICK -eq 1 ]]; then
    runs=("voco_step.py --device $device --steps 5 --warmup 2" "vf_step.py --device $device --steps 5 --warmup 2"
      "segment_speed.py --device $device --quick"
      "click_latency.py --device $device --clicks 8" "inspect_speed.py --device $device --runs 1"
      "voco_samples.py --runs 5" "vf_samples.py --quick")
  else
    runs=("voco_step.py --device $device" "vf_step.py --device $device" "segment_speed.py --device $device"
      "click_latency.py --device $device" "inspect_speed.py --device $device"
      "voco_samples.py" "vf_samples.py")
  fi
  [[ $WITH_CPU -eq 1 ]] && runs+=("segment_memory.py")

  local tmp run name rc start failed=0
  local -a table=()
  tmp=$(mktemp -d)
  for run in "${runs[@]}"; do
    name=${run%% *}
    echo
    echo "==== $run"
    start=$SECONDS
    rc=0
    # shellcheck disable=SC2086  # $run holds the script and its options
    "$PY" benchmarks/$run 2>&1 </dev/null | tee "$tmp/$(printf %02d ${#table[@]}).out" || rc=$?
    if [[ $rc -eq 0 ]]; then
      table+=("$(printf '%-18s %-22s %5d s' "$name" ran $((SECONDS - start)))")
    else
      table+=("$(printf '%-18s %-22s %5d s' "$name" "FAILED (exit $rc)" $((SECONDS - start)))")
      failed=1
    fi
  done

  echo
  echo "==== summary: $GPU; torch $TORCH_VERSION; python $pyver; $(date -u '+%Y-%m-%d %H:%M UTC')"
  printf '%s\n' "${table[@]}"
  local targets
  targets=$(cat "$tmp"/*.out | grep -a '^target ' || true)
  echo "$targets"
  echo "targets: $(grep -c ' ok$' <<<"$targets" || true) ok, $(grep -c ' short$' <<<"$targets" || true) short, $(grep -c ': skipped' <<<"$targets" || true) skipped"
  rm -rf "$tmp"
  if [[ $failed -ne 0 ]]; then
    echo "gpu_all: a benchmark failed (above)"
    return 1
  fi
  echo "gpu_all: every benchmark ran; log $LOG"
}

# main runs with -e in a subshell of its own: in `main | tee || ...` bash would ignore -e inside main.
set +e
(
  set -e
  main
) 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
