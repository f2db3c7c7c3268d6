#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go, for the short time a GPU is lent: the GPU training benchmark
# (eager), the GPU tests, the GPU forward benchmark, a profile of the training step by kind of kernel (with
# PyTorch's choice of attention kernel and with cuDNN's, which is benchmarked too), then the compiled training
# benchmark and profile, and the fastest configuration (bf16 residual stream, tuned compile) against timm (compiles
# are the slowest part, so they go last). Each step has its own time limit and a failure does not stop the next one.
# One log, OUT_DIR/checks.log, and the result files in one archive, OUT_DIR/results.tgz, go to OUT_DIR (default:
# $OUT, else gpu-checks/; a lent GPU returns 8 files at most); the results also land in analyses/benchmarks/results/.
# Runs with the python3 on PATH (PYTHON to choose another) and the vitlens of this checkout. On an H200 the steps up
# to profile_compile take about 6 minutes and train_tuned_lowprec 5 more: a lent GPU's call is at most 10 minutes, so
# pick with ONLY (the steps' limits add up to 20 minutes).
# Usage: [ONLY="step names"] analyses/benchmarks/gpu_checks.sh [OUT_DIR]   (ONLY: run just these steps)
set -u
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-gpu-checks}}
py=${PYTHON:-python3}
bench=analyses/benchmarks
mkdir -p "$out"
log="$out/checks.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, append to the log, print its end and exit status
  local name=$1 limit=$2; shift 2
  [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]] || return 0
  local t0=$SECONDS part="$out/.part"
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" > "$part" 2>&1
  local rc=$?
  cat "$part" >> "$log"
  grep -v '^DEBUG' "$part" | tail -n 25
  rm -f "$part"
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$log"
}

# The real command at the paper's recipe (compiled, dropout 0.1, tanh head) on synthetic images resized to 224 px:
# its logged img/s against the benchmark's (compiled at b128 on an H200: 3,383; the config's tuned compile adds 2-3 %)
# is the cost of data loading and of the per-step NaN check (a GPU sync).
pretrain_throughput() {
  $py -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU: skipped")' || return
  local run=/tmp/vitlens-gpu-pretrain
  rm -rf $run
  $py -m vitlens.cli pretrain --config paper_vit_b16 --out $run data.dataset=synthetic data.subset=2048 \
    train.steps=80 train.batch_size=128 train.eval=false train.log_every=10 || return
  grep -o '"step": [0-9]*\|"img_s": [0-9.]*' $run/metrics.jsonl | paste - -
  rm -rf $run
}
export -f pretrain_throughput
export py

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$log"
$py -c "import sys, torch, timm; print('python', sys.version.split()[0], 'torch', torch.__version__,
                                      'timm', timm.__version__)" | tee -a "$log"
step train_eager 90 $py $bench/bench_train_gpu.py --runs eager:128 eager:256 --name train_gpu
step tests 120 $py -m pytest tests/test_gpu.py -q -p no:cacheprovider -o addopts=-ra
step forward 45 $py $bench/bench_forward.py --device cuda
step profile_eager 45 $py $bench/profile_train_gpu.py --mode eager
step profile_cudnn 45 $py $bench/profile_train_gpu.py --mode eager --attention cudnn
step train_cudnn 60 $py $bench/bench_train_gpu.py --runs eager:128 --attention cudnn --name train_gpu_cudnn
step pretrain 240 bash -c pretrain_throughput  # paper_vit_b16 compiles tuned: a minute more
step train_compile 150 $py $bench/bench_train_gpu.py --runs compile:128 compile:256 --name train_gpu_compile
step profile_compile 90 $py $bench/profile_train_gpu.py --mode compile
# Two coordinate-descent-tuned compiles: about 4 minutes on an H200.
step train_tuned_lowprec 330 $py $bench/bench_train_gpu.py --runs tuned:256 --low-precision-residual \
  --name train_gpu_tuned_lowprec
names=()
for name in train_gpu train_gpu_compile train_gpu_cudnn forward_gpu profile_train_cuda_eager_auto \
            profile_train_cuda_eager_cudnn profile_train_cuda_compile_auto train_gpu_tuned_lowprec; do
  [[ -f $bench/results/$name.json ]] && names+=("$name.json") || echo "no $name.json (see the log)"
done
if (( ${#names[@]} )); then
  tar czf "$out/results.tgz" -C $bench/results "${names[@]}" && tar tzvf "$out/results.tgz"
fi
ls -l "$out"
