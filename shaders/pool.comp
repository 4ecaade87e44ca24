#version 450
// SnapKV step 5: 1-D pooling of each head's votes along positions, odd kernel k, stride 1,
// padding k/2, same length out. max ignores the padding; avg divides by k, counting the zero
// padding as the reference does (edges are damped). `ahead` widens the window backwards, so a
// voted position also lends its score to the `ahead` positions after it: what follows an
// attended key (the value a copy head reads next) comes along. ahead = 0 is the paper's pooling.
// A window longer than one invocation may loop (llvmpipe stops every loop of an invocation
// after 65535 iterations in all: host/kernels/loop_bounds.h) is taken in passes: pass
// [w_begin, w_end) of the window's positions starts from what the passes before left in pooled.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer V { float votes[]; };    // [n_kv][P]
layout(std430, binding = 1) buffer O { float pooled[]; };            // [n_kv][P]; between passes unscaled
layout(push_constant) uniform PC { uint P; uint n_kv; uint kernel_size; uint avg; uint ahead; uint w_begin; uint w_end; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.P * pc.n_kv) return;
  const uint h = idx / pc.P, j = idx % pc.P;
  const int half_k = int(pc.kernel_size / 2u);
  const int lo = max(int(j) - half_k - int(pc.ahead), 0), hi = min(int(j) + half_k, int(pc.P) - 1);
  float acc = pc.avg != 0u ? 0.0 : -1.0 / 0.0;
  if (pc.w_begin != 0u) acc = pooled[idx];
  const int end = min(hi, lo + int(pc.w_end) - 1);  // w_end <= kernel_size + ahead: no overflow
  for (int t = lo + int(pc.w_begin); t <= end; ++t) {
    const float v = votes[h * pc.P + uint(t)];
    acc = pc.avg != 0u ? acc + v : max(acc, v);
  }
  const bool final_pass = pc.w_end >= pc.kernel_size + pc.ahead;
  pooled[idx] = pc.avg != 0u && final_pass ? acc / float(pc.kernel_size + pc.ahead) : acc;
}
