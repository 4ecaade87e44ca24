#version 450
// SnapKV step 5: 1-D pooling of each head's votes along positions, odd kernel k, stride 1,
// padding k/2, same length out. max ignores the padding; avg divides by k, counting the zero
// padding as the reference does (edges are damped). `ahead` widens the window backwards, so a
// voted position also lends its score to the `ahead` positions after it: what follows an
// attended key (the value a copy head reads next) comes along. ahead = 0 is the paper's pooling.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer V { float votes[]; };    // [n_kv][P]
layout(std430, binding = 1) writeonly buffer O { float pooled[]; };  // [n_kv][P]
layout(push_constant) uniform PC { uint P; uint n_kv; uint kernel_size; uint avg; uint ahead; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.P * pc.n_kv) return;
  const uint h = idx / pc.P, j = idx % pc.P;
  const int half_k = int(pc.kernel_size / 2u);
  const int lo = max(int(j) - half_k - int(pc.ahead), 0), hi = min(int(j) + half_k, int(pc.P) - 1);
  float acc = pc.avg != 0u ? 0.0 : -1.0 / 0.0;
  for (int t = lo; t <= hi; ++t) {
    const float v = votes[h * pc.P + uint(t)];
    acc = pc.avg != 0u ? acc + v : max(acc, v);
  }
  pooled[idx] = pc.avg != 0u ? acc / float(pc.kernel_size + pc.ahead) : acc;
}
