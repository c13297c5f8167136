#!/usr/bin/env bash
# GPU readiness check, one command on a machine with an NVIDIA GPU (issue 21):
#   1. python -m pytest -q tests/gpu   (fp16 + GradScaler save/resume, bf16 / fp16 inference AP
#      against fp32, exact deterministic resume, NCCL with 2 GPUs, CUDA out-of-memory message)
#   2. tools/benchmark.py: R50-FPN and R101-C4 training (batch 8, bf16 and fp16) and inference
#      (batch 1, fp32 and bf16), 800x1067 synthetic images, random weights
#   3. a table of images/s next to Detectron2's published V100 figures
# About 4 minutes on one H200-class GPU. Usage, from anywhere:
#   tools/gpu_check.sh              # records and logs in output/gpu_check (GPU_CHECK_OUT=DIR)
# Exit status: 0 all passed, 1 a test or a benchmark failed (the rest still runs), 2 no GPU.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-output/gpu_check}

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA GPU here (torch.cuda.is_available() is False), so" \
        "nothing was run. Run it on a machine with an NVIDIA GPU, its driver, and a CUDA build" \
        "of torch (python -c 'import torch; print(torch.version.cuda)' must not print None)." >&2
    exit 2
fi
mkdir -p "$OUT"
"$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, \
{p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s); torch {torch.__version__}, \
CUDA {torch.version.cuda}')"

failed=0
start=$SECONDS

echo "== tests/gpu"
if ! "$PYTHON" -m pytest -q tests/gpu; then
    failed=1
fi

# bench NAME ARGS...: one tools/benchmark.py run; its record goes to $OUT/NAME.json, its
# progress to $OUT/NAME.log (shown when it fails)
bench() {
    local name=$1
    shift
    rm -f "$OUT/$name.json"
    if ! "$PYTHON" tools/benchmark.py --device cuda "$@" --json "$OUT/$name.json" \
        2>"$OUT/$name.log"; then
        echo "benchmark $name failed; the end of $OUT/$name.log:" >&2
        tail -n 20 "$OUT/$name.log" >&2
        failed=1
    fi
}

echo "== benchmarks (records and logs in $OUT)"
for model in R50_FPN R101_C4; do
    config=configs/coco/faster_rcnn_${model}_1x.yaml
    for precision in bf16 fp16; do
        bench "${model}_train_${precision}" --config "$config" --mode train --batch 8 \
            --precision "$precision" --iters 10 --warmup 3
    done
    for precision in fp32 bf16; do
        bench "${model}_inference_${precision}" --config "$config" --mode inference \
            --precision "$precision" --iters 30 --warmup 5
    done
done

echo "== images/s (one GPU) next to Detectron2's V100 figures"
"$PYTHON" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
# Detectron2's model zoo (8 V100s, fp32): training s/iter for 16 images over 8 GPUs (2 per
# GPU), inference s/image at batch 1. R101-C4 is the 3x row; speed does not depend on the
# schedule.
D2 = {
    ("R50_FPN", "train"): (16 / 8 / 0.210, "0.210 s/iter, 16 images on 8 GPUs"),
    ("R50_FPN", "inference"): (1 / 0.038, "0.038 s/image"),
    ("R101_C4", "train"): (16 / 8 / 0.619, "0.619 s/iter, 16 images on 8 GPUs"),
    ("R101_C4", "inference"): (1 / 0.139, "0.139 s/image"),
}
print("| model | mode | precision | batch | ours images/s | ours ms/iter | Detectron2 V100 images/s per GPU |")
print("|---|---|---|---|---|---|---|")
sizes = set()
for (model, mode), (d2, d2_text) in D2.items():
    for path in sorted(out.glob(f"{model}_{mode}_*.json")):
        r = json.loads(path.read_text())
        sizes.add("x".join(map(str, r["size"])))
        ours = r["ours"]
        print(
            f"| {model.replace('_', '-')} | {mode} | {r['precision']} | {r['batch']} | "
            f"{ours['images_per_s']:.1f} | {ours['median_s'] * 1000:.1f} | {d2:.1f} ({d2_text}) |"
        )
print(
    f"\nOurs: random weights, synthetic {', '.join(sorted(sizes))} images, no data loading, "
    "medians. Detectron2: "
    "COCO training with its data loader, averaged over the whole run, fp32 on V100s. A rough "
    "comparison, not a race on equal terms."
)
EOF

echo "total: $((SECONDS - start)) s"
exit "$failed"
