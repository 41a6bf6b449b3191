#!/usr/bin/env bash
# The GPU part of the "proof that it learns" (BENCHMARKS.md, "Learning on the GPU: embedded stack-cube"), as run on
# the H100 device host (16 cores). Every phase is one invocation of at most 10 minutes; runs continue across
# invocations through their checkpoints (runner.resume_dir), which is how a long run is done in pieces.
#
#   bash benchmarks/h100_stack_cube.sh sft                       # SFT starts (two lengths), eval of each
#   bash benchmarks/h100_stack_cube.sh rl  BOOT SECONDS          # PPO and GRPO from BOOT, side by side
#   bash benchmarks/h100_stack_cube.sh resume RUN SECONDS BOOT   # continue RUN (ppo|grpo) from its last checkpoint
#
# State lives in results/gpu (gitignored). Where the device host starts bare, the previous piece's outputs are
# untarred from .carry/*.tgz first. Outputs for the way back (logs, metrics, tarred checkpoints) go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:?phase: sft | rl | resume}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" results/gpu
if [ -d .gl ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} MUJOCO_GL=egl PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.3   # two runs share the GPU
if [ -d .carry ]; then for t in .carry/*.tgz; do [ -e "$t" ] && tar xzf "$t" -C results/gpu; done; fi
G=results/gpu
TASK=Embedded-Stack-Cube-Franka-IK-Rel-v0
PPO_CFG=embedded_stack_cube_ppo_gr00t
GRPO_CFG=embedded_stack_cube_grpo_gr00t
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader

# The SFT command the config's actor.model.bootstrap runs (same arguments), here with an explicit output dir.
sft() {  # steps
  python3 -m jaxrl_isaac.sft --task $TASK --episodes 200 --num-envs 16 --model-config small --steps "$1" \
    --batch-size 64 --lr 1e-3 --cam 32 --seed 1234 --log-interval 250 --out "$G/sft_$1"
}

evaluate() {  # name, then overrides
  local name=$1; shift
  python3 -m jaxrl_isaac.eval --config-name $PPO_CFG runner.logger.log_path="$G/eval_$name" "$@" \
    > "$OUT/eval_$name.log" 2>&1
  grep -E "eval/(success_once|success_at_end|return)" "$OUT/eval_$name.log" | sed "s/^/$name /"
}

train() {  # run name, config, seconds, then overrides; stops after the last step that fits in the time
  local run=$1 cfg=$2 seconds=$3; shift 3
  timeout --signal=INT "$seconds" python3 -m jaxrl_isaac.train --config-name "$cfg" runner.logger.log_path="$G/$run" \
    "$@" > "$OUT/train_$run.log" 2>&1
  echo "$run exit $?"
}

summary() {  # run: one line per logged step
  python3 - "$G/$1/metrics.jsonl" "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    keys = ("env/success_once", "eval/success_once", "actor/approx_kl", "time/step")
    print(sys.argv[2], m["step"], *(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float)))
PY
}

pack() {  # name, dir (relative to $G): a tgz in $OUT, split below the 16 MiB per-file limit
  (cd $G && tar czf - "$2") | split -b 15m -d - "$OUT/$1.tgz."
}

case $phase in
  sft)
    for steps in 1500 5000; do sft $steps > "$OUT/sft_$steps.log" 2>&1 & done
    wait
    grep -h -E "collected|step (1|1500|5000)/" "$OUT"/sft_*.log
    for steps in 1500 5000; do
      evaluate "sft_$steps" actor.model.bootstrap=null actor.model.model_path="$G/sft_$steps/global_step_$steps" &
    done
    wait
    for steps in 1500 5000; do pack "sft_$steps" "sft_$steps"; done
    ;;
  rl)
    boot=${2:?BOOT: an SFT step dir under results/gpu}; seconds=${3:-480}
    start=(actor.model.bootstrap=null actor.model.model_path="$G/$boot")
    train ppo $PPO_CFG "$seconds" "${start[@]}" runner.save_interval=10 &
    train grpo $GRPO_CFG "$seconds" "${start[@]}" runner.save_interval=10 &
    wait
    for run in ppo grpo; do
      summary "$run"
      last=$(ls -d $G/$run/checkpoints/global_step_* | sort -t_ -k3 -n | tail -1)
      pack "$run" "$run/checkpoints/$(basename "$last")"
      cp "$G/$run/metrics.jsonl" "$OUT/${run}_metrics.jsonl"
    done
    ;;
  resume)
    run=${2:?RUN: ppo or grpo}; seconds=${3:-540}; boot=${4:?BOOT}
    cfg=$PPO_CFG; [ "$run" = grpo ] && cfg=$GRPO_CFG
    last=$(ls -d $G/$run/checkpoints/global_step_* | sort -t_ -k3 -n | tail -1)
    export XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
    train "$run" "$cfg" "$seconds" actor.model.bootstrap=null actor.model.model_path="$G/$boot" \
      runner.resume_dir="$last" runner.save_interval=10
    summary "$run"
    cp "$G/$run/metrics.jsonl" "$OUT/${run}_metrics.jsonl"
    ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
ls -la "$OUT"
