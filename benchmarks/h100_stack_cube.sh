#!/usr/bin/env bash
# The GPU part of the "proof that it learns" (BENCHMARKS.md, "Learning on the GPU: embedded stack-cube"), as run on
# the H100 device host (16 cores). Every phase is one invocation of at most 10 minutes; runs continue across
# invocations through their checkpoints (runner.resume_dir), which is how a long run is done in pieces.
#
#   bash benchmarks/h100_stack_cube.sh sft                       # SFT starts (SFT_STEPS), eval of each; with
#                                                                # THEN_PPO_UNTIL=T, PPO from the best until T s
#                                                                # (skipped if under THEN_PPO_MIN=120 s are left)
#   bash benchmarks/h100_stack_cube.sh profile BOOT [CHUNKS]     # rendering throughput; 2 short PPO steps' timings
#   bash benchmarks/h100_stack_cube.sh rl  BOOT SECONDS          # PPO, then GRPO, from BOOT (SECONDS each;
#                                                                # RUNS="ppo" for one; PPO_ARGS: extra overrides)
#   bash benchmarks/h100_stack_cube.sh resume RUN SECONDS BOOT   # continue RUN (ppo|grpo) from its last checkpoint
#   bash benchmarks/h100_stack_cube.sh eval NAME:CFG:CKPT ...    # eval each checkpoint (CKPT under results/gpu, or
#                                                                # "-" for the SFT start BOOT); EVAL_ARGS: overrides
#   bash benchmarks/h100_stack_cube.sh render                    # camera rendering per frame vs tiled, 8 workers
#
# Training pieces stop cleanly before SECONDS run out (runner.max_wall_time_s = SECONDS - 20, with a checkpoint of
# the last finished step); `timeout` stays as the backstop. Cameras render tiled (env.*.init_params.tiled_rendering,
# sft --tiled-rendering), as the configs do since 2026-12-04; TILED=0 renders frame by frame, as the runs before
# that. THEN_PPO_UNTIL counts from CALL_T0 where set.
#
# State lives in results/gpu (gitignored). Where the device host starts bare, the previous piece's outputs are
# untarred from .carry/*.tgz first. Outputs for the way back (logs, metrics, tarred checkpoints) go to $OUT.
set -uo pipefail
# CALL_T0 (date +%s when the device call began) makes the time limits below count from then, across several phases
# run in one call; without it they count from this script's start.
[ -n "${CALL_T0:-}" ] && SECONDS=$(( $(date +%s) - CALL_T0 ))
cd "$(dirname "$0")/.."
phase=${1:?phase: sft | rl | resume}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" results/gpu
if [ -d .gl ] && [ -z "${NO_WHEELS:-}" ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  if [ ! -d /tmp/site/mujoco ]; then  # once per host: later phases of the same (warm) host reuse it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
  fi
  export PYTHONPATH=/tmp/site
fi
TILE_ARGS=(env.train.init_params.tiled_rendering=true); SFT_TILE=--tiled-rendering  # as the configs (TILED=1)
if [ "${TILED:-1}" = 0 ]; then TILE_ARGS=(env.train.init_params.tiled_rendering=false); SFT_TILE=; fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1
if [ -d .carry ]; then  # whole tgz files, and tgz files split into .tgz.00, .tgz.01, ... by pack()
  for t in .carry/*.tgz; do [ -e "$t" ] && tar xzf "$t" -C results/gpu; done
  for t in .carry/*.tgz.00; do [ -e "$t" ] && cat "${t%.00}".* | tar xzf - -C results/gpu; done
fi
G=results/gpu
TASK=Embedded-Stack-Cube-Franka-IK-Rel-v0
PPO_CFG=embedded_stack_cube_ppo_gr00t
GRPO_CFG=embedded_stack_cube_grpo_gr00t
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -c "import jax; print('JAX', jax.__version__, jax.devices())"

# The SFT command the config's actor.model.bootstrap runs (same arguments), here with an explicit output dir;
# SFT_ARGS are appended (later flags win), e.g. "--num-workers 8 --num-envs 64 --batch-size 128".
sft() {  # steps (kept when a previous piece on this host already wrote it)
  [ -d "$G/sft_$1/global_step_$1" ] && { echo "reusing $G/sft_$1"; return 0; }
  python3 -m jaxrl_isaac.sft --task $TASK --episodes ${SFT_EPISODES:-1500} --num-envs 16 --model-config small --steps "$1" \
    --batch-size 128 --lr 1e-3 --cam 32 --seed 1234 --log-interval 1000 --no-augment --tiny-tokenizer bytes \
    --out "$G/sft_$1" $SFT_TILE ${SFT_ARGS:-}
}

evaluate() {  # name, then overrides
  local name=$1; shift
  python3 -m jaxrl_isaac.eval --config-name $PPO_CFG runner.logger.log_path="$G/eval_$name" "$@" "${TILE_ARGS[@]}" \
    ${EVAL_ARGS:-} \
    > "$OUT/eval_$name.log" 2>&1
  grep -E "eval/(success_once|success_at_end|return)" "$OUT/eval_$name.log" | sed "s/^/$name /"
}

train() {  # run name, config, seconds, then overrides; stops after the last step that fits in the time
  local run=$1 cfg=$2 seconds=$3; shift 3
  timeout --signal=INT "$seconds" python3 -m jaxrl_isaac.train --config-name "$cfg" runner.logger.log_path="$G/$run" \
    runner.max_wall_time_s=$((seconds - 20)) "${TILE_ARGS[@]}" "$@" > "$OUT/train_$run.log" 2>&1
  echo "$run exit $?"
}

summary() {  # run: one line per logged step
  python3 - "$G/$1/metrics.jsonl" "$1" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    keys = ("env/success_once", "eval/success_once", "actor/approx_kl", "time/step", "time/env_step",
            "time/policy_inputs", "time/policy_forward", "time/actor_training")
    print(sys.argv[2], m["step"], *(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float)))
PY
}

pack() {  # name, dir (relative to $G): a tgz in $OUT, split below the 16 MiB per-file limit
  (cd $G && tar czf - "$2") | split -b 15m -d - "$OUT/$1.tgz."
}

case $phase in
  sft)  # SFT_STEPS="25000" by default; each start is evaluated with EVAL_CHUNKS-step chunks (default 4)
    list=${SFT_STEPS:-25000}
    # One JAX process per GPU at a time: two time-slice the GPU and both run ~7x slower (seen on the H100).
    for steps in $list; do sft "$steps" > "$OUT/sft_$steps.log" 2>&1; done
    # Without THEN_PPO_UNTIL the starts travel back now, before anything that could overrun the call.
    [ -z "${THEN_PPO_UNTIL:-}" ] && for steps in $list; do pack "sft_$steps" "sft_$steps"; done
    grep -h -E "collected|step [0-9]+/" "$OUT"/sft_*.log
    for chunks in ${EVAL_CHUNKS:-4}; do
      for steps in $list; do
        evaluate "sft_${steps}_c$chunks" actor.model.bootstrap=null \
          actor.model.model_path="$G/sft_$steps/global_step_$steps" actor.model.num_action_chunks=$chunks
      done
    done
    # Optionally go on with PPO from the start whose success (the config's 4-step chunks) is closest to 0.5 within
    # [0.3, 0.7].
    if [ -n "${THEN_PPO_UNTIL:-}" ]; then  # seconds since the script started when PPO must stop
      best=$(python3 - $G $list <<'PY'
import json, os, sys
g, best = sys.argv[1], None
for steps in sys.argv[2:]:
    rows = [json.loads(l) for l in open(f"{g}/eval_sft_{steps}_c4/metrics.jsonl")]
    s0 = rows[-1]["eval/success_once"]
    print(f"sft_{steps}: eval/success_once {s0:.3f}", file=sys.stderr)
    if float(os.environ.get("S0_MIN", 0.3)) <= s0 <= 0.7 and (best is None or abs(s0 - 0.5) < best[0]):
        best = (abs(s0 - 0.5), steps)
print(best[1] if best else "")
PY
)
      pack "sft_${best:-${list##* }}" "sft_${best:-${list##* }}"
      left=$((THEN_PPO_UNTIL - SECONDS))
      # Under THEN_PPO_MIN s the PPO process would spend most of it starting and compiling: skip, and leave the
      # call's remaining device time to a separate rl call. (It stops with a checkpoint, runner.max_wall_time_s.)
      if [ -n "$best" ] && [ "$left" -lt "${THEN_PPO_MIN:-120}" ]; then
        echo "PPO skipped: ${left} s left before THEN_PPO_UNTIL, under THEN_PPO_MIN=${THEN_PPO_MIN:-120}"; best=
        skipped=1
      fi
      if [ -n "$best" ]; then
        echo "PPO from sft_$best"
        export XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
        train ppo $PPO_CFG $((THEN_PPO_UNTIL - SECONDS)) actor.model.bootstrap=null \
          actor.model.model_path="$G/sft_$best/global_step_$best" runner.save_interval=10 ${PPO_ARGS:-}
        summary ppo
        last=$(ls -d $G/ppo/checkpoints/global_step_* | sort -t_ -k3 -n | tail -1)
        pack ppo "ppo/checkpoints/$(basename "$last")"
        cp "$G/ppo/metrics.jsonl" "$OUT/ppo_metrics.jsonl"
      elif [ -z "${skipped:-}" ]; then
        echo "no SFT start in [0.3, 0.7]"
      fi
    fi
    ;;
  profile)  # where a global step's time goes: camera rendering alone, then two PPO steps of one rollout epoch
    boot=${2:?BOOT: an SFT step dir under results/gpu}; chunks=${3:-16}
    python3 -m jaxrl_isaac.bench env --task $TASK --num-envs 64 --num-workers 1 8 --cam-size 32 --chunk "$chunks" \
      --modes no_cameras cameras_every_chunk --steps 224
    train profile $PPO_CFG 300 actor.model.bootstrap=null actor.model.model_path="$G/$boot" \
      actor.model.num_action_chunks="$chunks" runner.max_epochs=2 env.train.rollout_epoch=1 \
      runner.save_interval=-1 runner.val_check_interval=-1 ${PPO_ARGS:-}
    summary profile
    ;;
  rl)
    boot=${2:?BOOT: an SFT step dir under results/gpu}; seconds=${3:-480}
    start=(actor.model.bootstrap=null actor.model.model_path="$G/$boot")
    # One after the other, SECONDS each: two JAX processes on one GPU time-slice it. RUNS="ppo" runs PPO only.
    runs=${RUNS:-ppo grpo}
    for run in $runs; do
      cfg=$PPO_CFG; [ "$run" = grpo ] && cfg=$GRPO_CFG
      train "$run" "$cfg" "$seconds" "${start[@]}" runner.save_interval=10 ${PPO_ARGS:-}
    done
    for run in $runs; do
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
      runner.resume_dir="$last" runner.save_interval=10 ${PPO_ARGS:-}
    summary "$run"
    last=$(ls -d $G/$run/checkpoints/global_step_* | sort -t_ -k3 -n | tail -1)
    pack "$run" "$run/checkpoints/$(basename "$last")"  # for the next piece
    cp "$G/$run/metrics.jsonl" "$OUT/${run}_metrics.jsonl"
    ;;
  render)  # per-frame vs tiled rendering: the env as PPO runs it (64 envs, 8 workers, 2 cameras every 4 steps)
    python3 -m jaxrl_isaac.bench render --num-envs 8 64 --cam-size 32 --repeats 10
    python3 -m jaxrl_isaac.bench env --task $TASK --num-envs 64 --num-workers 1 8 --cam-size 32 --chunk 4 \
      --modes no_cameras cameras_every_chunk --rendering per_frame tiled --steps 112
    ;;
  eval)  # e.g. EVAL_ARGS="env.eval.rollout_epoch=4" (512 episodes) for a tighter estimate than the in-training 128
    shift
    for spec in "$@"; do
      IFS=: read -r name cfg ckpt <<< "$spec"
      args=(actor.model.bootstrap=null actor.model.model_path="$G/${BOOT:-sft_25000/global_step_25000}")
      [ "$ckpt" != - ] && args+=(runner.ckpt_path="$G/$ckpt")
      python3 -m jaxrl_isaac.eval --config-name "$cfg" runner.logger.log_path="$G/eval_$name" "${args[@]}" \
        "${TILE_ARGS[@]}" ${EVAL_ARGS:-} > "$OUT/eval_$name.log" 2>&1
      grep -E "eval/(success_once|success_at_end|return|num_trajectories)|time/eval" "$OUT/eval_$name.log" | sed "s/^/$name /"
    done
    ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
# At most 8 files come back from the device host: logs and metrics travel as one tgz.
(cd "$OUT" && tar czf "logs_$phase.tgz" --remove-files $(ls | grep -E '\.(log|jsonl)$'))
ls -la "$OUT"
