# Session 8, #16: the fast path on Q4_0 / Q5_0 dense matrices (split exactly to the Q8 form).
# compare-devices (CUDA fast path against the CPU) on tiny files of each type and on 2 layers
# of 20B shape, then batch-1 decode of that 2-layer file. Carry: .carry/gptoss.xz.
. scripts/device/common.sh dense
for t in q8_0 q4_0 q5_0; do
  step "tiny $t: gen, inspect path, compare-devices"
  $B/gptoss gen-model --preset tiny --dense-type $t --out /tmp/tiny-$t.gguf 2>&1 | tail -1
  $B/gptoss inspect --check /tmp/tiny-$t.gguf 2>&1 | grep "CUDA path" | tee $R/path_$t.txt
  $B/gptoss compare-devices --model /tmp/tiny-$t.gguf --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_tiny_$t.txt
done
step "20b x2 layers q4_k (Q4_K attn_output: generic) and q4_0 (fast)"
for t in q4_0 q4_k; do
  $B/gptoss gen-model --preset 20b --layers 2 --dense-type $t --out /tmp/20b2-$t.gguf 2>&1 | tail -1
  $B/gptoss inspect --check /tmp/20b2-$t.gguf 2>&1 | grep "CUDA path" | tee $R/path_20b2_$t.txt
done
$B/gptoss compare-devices --model /tmp/20b2-q4_0.gguf --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_20b2_q4_0.txt
step "done"
