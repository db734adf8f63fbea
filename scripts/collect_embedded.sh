#!/usr/bin/env bash
# Re-collect the shipped records of the embedded default pool on the built-in suite (resumable: rerun after
# a kill). One process per tool, each pinned to one CPU (llama.cpp then runs one thread, which is fastest on
# shared cores) and walking the suite pair-major, so llama.cpp reuses the prompt prefix between questions.
# Usage: scripts/collect_embedded.sh OUT_DIR   (then: atlas demo --refit --records OUT_DIR)
set -euo pipefail
OUT=${1:?usage: scripts/collect_embedded.sh OUT_DIR}
ATLAS=${ATLAS:-atlas}
BENCHES="suite-arithmetic suite-word-problems suite-units-dates suite-facts suite-code suite-common-sense"
NCPU=$(nproc)
i=0
for TOOL in ${TOOLS:-none calculator python-code web-search prm}; do
  CPU=$(( i % NCPU )); i=$((i + 1))
  (
    for SPLIT in test train; do
      for B in $BENCHES; do
        taskset -c "$CPU" nice -n 2 "$ATLAS" collect -b "$B" --split "$SPLIT" --pairs "smollm2-135m@@$TOOL" \
          --out "$OUT" -c 1 --json > "$OUT.$TOOL.$B.$SPLIT.json"
      done
    done
  ) &
done
wait
