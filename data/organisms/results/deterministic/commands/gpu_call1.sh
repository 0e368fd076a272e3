#!/bin/bash
# GPU call 1 of the organisms helper: the deterministic 1m/6m ladder (4 seeds each), a second deterministic
# rebuild of 6m seed 1 (hashes and study rows compared), the same job with default kernels (cost of determinism),
# and the model cards of the 6m seed-0 checkpoints measured on the GPU.
set -u
cd "$(dirname "$0")"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
R=/tmp/res; CK=/tmp/ck; DL=${DL:-525}; mkdir -p $R $CK
T0=$(date +%s)
python3 -c "import torch,transformers,pandas,matplotlib;print(torch.__version__,transformers.__version__,torch.version.cuda,torch.cuda.get_device_name(0))"
nproc; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
L2S="python3 -m l2s_lib.cli organisms sweep"
if ! $L2S --help >/dev/null 2>$R/cli_err.txt; then echo "l2s cli failed:"; tail -3 $R/cli_err.txt; L2S="python3 -m l2s_lib.organisms.sweep"; fi
$L2S --ladder 1m 6m --seeds 0 1 2 3 --gpus 1 --out $R/ladder --ckpt $CK/ladder --deadline $DL > $R/ladder.log 2>&1 & P1=$!
$L2S --jobs tiring:6m:1 --gpus 1 --out $R/rebuild --ckpt $CK/rebuild --deadline $DL > $R/rebuild.log 2>&1 & P2=$!
$L2S --jobs tiring:6m:1 --gpus 1 --nondeterministic --train-only --out $R/nondet --ckpt $CK/nondet --deadline $DL > $R/nondet.log 2>&1 & P3=$!
( while ! grep -q "^trained" $CK/ladder/log_tiring_6m_0.txt 2>/dev/null; do sleep 5; [ $(( $(date +%s) - T0 )) -gt $DL ] && exit 1; done
  CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout $(( DL - ($(date +%s) - T0) )) python3 -m l2s_lib.organisms.cards --device cuda --batch-size 512 \
     $CK/ladder/tiring_6m_s0/{system1,system2,dpo,system2_equal} > $R/cards.log 2>&1 ) & P4=$!
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 15 > $R/gpu_util.txt 2>&1 & P5=$!
sleep 60; tail -2 $CK/ladder/log_*.txt $CK/rebuild/log_*.txt $CK/nondet/log_*.txt
wait $P1 $P2 $P3 $P4; kill $P5
echo "all done at $(( $(date +%s) - T0 ))s"
tail -3 $R/*.log; tail -4 $CK/*/log_*.txt
cp $CK/*/log_*.txt $R/ 2>/dev/null
mkdir -p $R/6m_s0; for r in system1 system2 dpo system2_equal; do mkdir -p $R/6m_s0/$r; cp $CK/ladder/tiring_6m_s0/$r/*.json $CK/ladder/tiring_6m_s0/$r/*.md $R/6m_s0/$r/ 2>/dev/null; done
cp $CK/ladder/tiring_6m_s0/train_log.json $R/6m_s0/ 2>/dev/null
tar czf $OUT/results.tar.gz -C /tmp res
mkdir -p $OUT/6m_s0; for r in system1 system2 dpo system2_equal; do cp $CK/ladder/tiring_6m_s0/$r/model.safetensors $OUT/6m_s0/$r.safetensors 2>/dev/null; done
ls -la $OUT $OUT/6m_s0
