# The service-load A/B of session 20's engine changes (per-bucket cost lines, disconnect
# withdrawal, deadline timer) against the tree before them (562bf8c), alternating trees,
# five runs each, on one 2-vCPU machine (the committed runs: 1-2 new first, 3-5 old first).
# From the repo root, with the tree before at /tmp/wt_old:
#   git worktree add /tmp/wt_old 562bf8c && cp -r rfmodel/weights/. /tmp/wt_old/rfmodel/weights/
out=${1:-/tmp/ab}; mkdir -p "$out"
for i in 1 2 3 4 5; do
  for t in new old; do
    d=$PWD; [ $t = old ] && d=/tmp/wt_old
    (cd "$d" && PYTHONPATH=$d python -m service bench service --backends mha --out "$out/$t-$i")
  done
done
