#!/usr/bin/env bash
# The accelerator checks in one script (one short device lease): Pallas BTT / block-sparse vs XLA,
# GPT-2 small (configs/gpt2_owt.py, synthetic tokens) dense and BTT: tokens/s, MFU, and where
# the device time goes (a profile of three steps, summarized by benchmarks/profile_summary.py at
# the end of each run's log), and the compile time of the step, scanned or not.
#
#   OUT=results_dir bash benchmarks/gpu_check.sh          # on a GPU/TPU machine
#   OUT=/tmp/check QUICK=1 bash benchmarks/gpu_check.sh   # CPU rehearsal: tiny sizes, interpreted kernels
#   OUT=dir bash benchmarks/gpu_check.sh gpt2_dense        # only the named stages (a rerun)
#
# Stages: pallas, gpt2_dense, gpt2_btt, gpt2_btt_pallas, compile (scanned vs unrolled compile
# time). On an H200 the first four took 1-2.5 min each (benchmarks/results/gpu_h200.md), so
# they do not all fit in one 10-minute call: name a subset per call.
#
# Each stage has its own time limit, so one that hangs or fails leaves the others' results. Python
# packages the machine lacks can be put as wheels in .whl/ (installed under /tmp/site first).
set -u
OUT=${OUT:?set OUT to the results folder}
QUICK=${QUICK:-0}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
if compgen -G ".whl/*.whl" >/dev/null; then
  rm -rf /tmp/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi

{ date -u; nvidia-smi -L 2>/dev/null; uptime
  $PY -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
} > "$OUT/env.txt" 2>&1

STAGES=${*:-pallas gpt2_dense gpt2_btt gpt2_btt_pallas compile}
stage() {   # stage NAME SECONDS CMD...: runs CMD with a limit, output to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  [[ " $STAGES " == *" $name "* ]] || return 1
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: rc $rc in $((SECONDS - t0)) s" | tee -a "$OUT/env.txt"
  return $rc
}

if [ "$QUICK" = 1 ]; then
  stage pallas 300 $PY -m benchmarks.pallas_btt --quick
  SIZE="runlocal=True"; STEPS=(); PROFILE=10-12
else
  stage pallas 150 $PY -m benchmarks.pallas_btt
  SIZE="steps=30"; STEPS=(--config.log_every=10 --config.microbatches=8); PROFILE=21-23
fi
# only tables this run wrote (the committed ones of other devices stay behind)
find benchmarks/results -name 'pallas_btt_*' -newer "$OUT/env.txt" -exec cp {} "$OUT/" \;

# Synthetic GPT-2 tokens: timing needs the shapes, not the text.
$PY -c "
import numpy as np, os
os.makedirs('/tmp/owt', exist_ok=True)
rng = np.random.default_rng(0)
for split, n in (('train', 10_000_000), ('val', 1_000_000)):
  rng.integers(0, 50257, n, dtype=np.uint16).tofile(f'/tmp/owt/{split}.bin')"

gpt2() {   # gpt2 NAME SECONDS CONFIG_ARG
  rm -rf "/tmp/$1"
  stage "$1" "$2" $PY -m experiments.main --config "configs/gpt2_owt.py:$3,$SIZE" --workdir "/tmp/$1" \
    --config.data.dir=/tmp/owt --config.data.eval_batches=1 --config.eval_every=1000 \
    --config.checkpoint_every=0 --config.wandb.mode=disabled --config.profile_steps=$PROFILE ${STEPS[@]+"${STEPS[@]}"} \
    || return 0   # failed or not selected: no profile to summarize
  $PY -m benchmarks.profile_summary "/tmp/$1/profile" >> "$OUT/$1.log" 2>&1
}
gpt2 gpt2_dense 160 kind=dense
gpt2 gpt2_btt 130 kind=btt,rank=4,width=1024
gpt2 gpt2_btt_pallas 150 kind=btt,rank=4,width=1024,impl=pallas

# Does model.scan_layers pay on this backend? (the table is at the end of compile.log)
if [ "$QUICK" = 1 ]; then
  stage compile 300 $PY -m benchmarks.compile_time --depths 1,2 --repeats 1 --out /tmp/compile_time
else
  stage compile 180 $PY -m benchmarks.compile_time --depths 2,12 --repeats 1 --out /tmp/compile_time
fi
exit 0   # each stage's rc is in env.txt
