#!/bin/bash
# GPU call 2 of the organisms helper: 1m seed 0 rebuilt twice with deterministic kernels (train + merge study;
# compared with each other and with call 1's build of the same job on another machine), and twice with
# PyTorch's default kernels (train only): repeatability and the training-time cost of determinism.
set -u
cd "$(dirname "$0")"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
R=/tmp/res; CK=/tmp/ck; DL=${DL:-275}; mkdir -p $R $CK
L2S="python3 -m l2s_lib.cli organisms sweep"
for x in det_a det_b; do $L2S --jobs tiring:1m:0 --gpus 1 --out $R/$x --ckpt $CK/$x --deadline $DL > $R/$x.log 2>&1 & done
for x in nondet_a nondet_b; do $L2S --jobs tiring:1m:0 --gpus 1 --nondeterministic --train-only --out $R/$x --ckpt $CK/$x --deadline $DL > $R/$x.log 2>&1 & done
wait
for x in det_a det_b nondet_a nondet_b; do cp $CK/$x/log_*.txt $R/$x/ 2>/dev/null; done
tar czf $OUT/results2.tar.gz -C /tmp res
for x in det_a det_b nondet_a nondet_b; do grep -h sha256 -o $R/$x/jobs.jsonl >/dev/null 2>&1; python3 -c "import json,sys;[print('$x', json.loads(l)['train_seconds'], json.loads(l)['study_seconds'], {k:v[:12] for k,v in json.loads(l)['sha256'].items()}) for l in open('$R/$x/jobs.jsonl')]" 2>&1 | tail -2; done
