#version 450
// SnapKV step 3, first half: for each voting query i (the last n_q prompt tokens; i = 0 is
// position L - n_q) and query head h, the max and sum of exp over its softmax row
// softmax(q_i K^T / sqrt(d)) across the keys it may see (all prefix keys, and window keys up
// to its own position). Rows are fp32 over all L keys; window_votes then recomputes each
// probability once per key and sums them, so no n_q x L matrix is ever stored.
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
#define KV_K_BINDING 1
#define KV_V_BINDING 1
#include "kv.glsl"
#define HEADS_BINDING 3
#include "heads.glsl"
layout(std430, binding = 0) readonly buffer Q { float q[]; };        // [n_q, n_head, HD], RoPE applied
layout(std430, binding = 2) writeonly buffer S { float stats[]; };   // [n_head][n_q][2]: max, sum
layout(push_constant) uniform PC { uint L; uint n_q; uint n_head; uint n_kv; float scale; } pc;

shared float qs[HD];

void main() {
  const uint i = gl_WorkGroupID.x, h = gl_WorkGroupID.y;
  const uint kvh = h / (pc.n_head / pc.n_kv);
  const uint off = head_offset(kvh);
  const uint visible = pc.L - pc.n_q + i + 1u;
  for (uint d = gl_LocalInvocationID.x; d < HD; d += gl_WorkGroupSize.x) qs[d] = q[(i * pc.n_head + h) * HD + d] * pc.scale;
  barrier();
  float m = -1.0 / 0.0, l = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < visible; j += gl_WorkGroupSize.x) {
    float s = 0.0;
    // unrolled (HD is a specialization constant): llvmpipe ends every loop of an invocation after
    // 65535 iterations in all, which a rolled head_dim loop reached at 32K keys of head_dim 256
    [[unroll]] for (uint d = 0; d < HD; d += 2u) {
      const vec2 k = k_load2(off + j, d);
      s += qs[d] * k.x + qs[d + 1u] * k.y;
    }
    const float m_new = max(m, s);
    l = l * exp(m - m_new) + exp(s - m_new);
    m = m_new;
  }
  const float M = workgroup_max(m);
  const float total = workgroup_sum(m == -1.0 / 0.0 ? 0.0 : l * exp(m - M));
  if (gl_LocalInvocationID.x == 0) {
    stats[(h * pc.n_q + i) * 2u] = M;
    stats[(h * pc.n_q + i) * 2u + 1u] = total;
  }
}
