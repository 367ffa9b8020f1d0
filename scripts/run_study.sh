#!/usr/bin/env bash
# The exact commands that produced docs/study/*.json and docs/figures/*.png (seed study reproduction).
# Run from the repository root; one torch thread, one study at a time (about 60 min on 2 shared cores).
set -euo pipefail
cd "$(dirname "$0")/.."

# (1) 10-fold CV of the Table-1 network on train.csv + val.csv (Fig. 5/6)
fh-screen evaluate --study cv --folds 10 --seed 0 --epochs 150 --max-minutes 3.5 --threads 1 --output-dir docs
# (2) accuracy vs training-set size, tested on val.csv (Fig. 4)
fh-screen evaluate --study size --sizes 5000,10000,50000,all --epochs 150 --max-minutes 3.5 --threads 1 --output-dir docs
# (3) architectures of Fig. 2, tested on val.csv
fh-screen evaluate --study arch --presets fig2-32,fig2-64,fig2-96,fig2-128 --epochs 150 --max-minutes 2.5 --threads 1 --output-dir docs
# (4) 256x2+128x2+64x2+32+1 without early stopping on a 20,000-row subset (Fig. 3)
fh-screen evaluate --study overfit --overfit-rows 20000 --overfit-epochs 150 --max-minutes 3 --threads 1 --output-dir docs
