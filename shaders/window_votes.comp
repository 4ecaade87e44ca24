#version 450
// SnapKV step 4 with the GQA aggregation: the vote of prefix position j (j < P) for KV head
// kvh is agg over the G query heads h of kvh of sum_i softmax(q_i K^T / sqrt(d))[j], the
// probability being recomputed from window_stats' row max and sum. agg: 0 mean, 1 max, 2 sum.
// One invocation per prefix key: its K row is read once; the queries stream through shared
// memory in blocks of QB.
//
// An invocation loops over every voting query of each of the G heads (H2O: the whole prompt),
// about G * n_q * (QB + 2) / QB loop iterations, and llvmpipe stops every loop of an invocation
// after 65535 in all (host/kernels/loop_bounds.h). So the loops over a block's loads are
// unrolled, and the host splits the queries into passes [q_begin, q_end): each pass adds its
// part of every head's sum to sums (a pass that is not the first starts from there), and the
// last aggregates the heads into votes. One pass (all queries) needs no sums.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint G = 1;
layout(constant_id = 3) const uint QB = 16;
#define KV_K_BINDING 1
#define KV_V_BINDING 1
#include "kv.glsl"
#define HEADS_BINDING 4
#include "heads.glsl"
layout(std430, binding = 0) readonly buffer Q { float q[]; };        // [n_q, n_head, HD]
layout(std430, binding = 2) readonly buffer S { float stats[]; };    // [n_head][n_q][2]
layout(std430, binding = 3) writeonly buffer V { float votes[]; };   // [n_kv][P]
layout(std430, binding = 5) buffer Sums { float sums[]; };           // [n_head][P]: between passes
layout(push_constant) uniform PC {
  uint L; uint n_q; uint P; uint n_head; float scale; uint agg; uint q_begin; uint q_end;
} pc;

shared float qs[QB * HD];
shared float ms[QB], inv_ls[QB];
const uint LOAD_PER_THREAD = (QB * HD + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;
const uint ROW_PER_THREAD = (QB + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;

void main() {
  const uint kvh = gl_WorkGroupID.y;
  const uint j = gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
  const uint slot = head_offset(kvh) + min(j, pc.P - 1u);
  vec2 k[HD / 2u];
  [[unroll]] for (uint d = 0; d < HD / 2u; ++d) k[d] = k_load2(slot, 2u * d);

  const bool final_pass = pc.q_end == pc.n_q;
  float vote = 0.0;  // probabilities are >= 0, so 0 is also max's identity
  for (uint g = 0; g < G; ++g) {
    const uint h = kvh * G + g;
    float sum = 0.0;
    if (pc.q_begin != 0u && j < pc.P) sum = sums[h * pc.P + j];  // the passes before
    for (uint i0 = pc.q_begin; i0 < pc.q_end; i0 += QB) {
      barrier();
      [[unroll]] for (uint i = 0; i < LOAD_PER_THREAD; ++i) {
        const uint e = tid + i * WG;
        if (e < QB * HD) {
          const uint r = e / HD, d = e % HD;
          qs[e] = i0 + r < pc.q_end ? q[((i0 + r) * pc.n_head + h) * HD + d] * pc.scale : 0.0;
        }
      }
      [[unroll]] for (uint i = 0; i < ROW_PER_THREAD; ++i) {
        const uint r = tid + i * WG;
        if (r < QB) {
          const bool ok = i0 + r < pc.q_end;
          ms[r] = ok ? stats[(h * pc.n_q + i0 + r) * 2u] : 0.0;
          inv_ls[r] = ok ? 1.0 / stats[(h * pc.n_q + i0 + r) * 2u + 1u] : 0.0;
        }
      }
      barrier();
      const uint rows = min(QB, pc.q_end - i0);
      for (uint r = 0; r < rows; ++r) {
        if (j > pc.L - pc.n_q + i0 + r) continue;  // causal: this query comes before key j
        float s = 0.0;
        [[unroll]] for (uint d = 0; d < HD / 2u; ++d) s += qs[r * HD + 2u * d] * k[d].x + qs[r * HD + 2u * d + 1u] * k[d].y;
        sum += exp(s - ms[r]) * inv_ls[r];
      }
    }
    if (!final_pass && j < pc.P) sums[h * pc.P + j] = sum;
    vote = pc.agg == 1u ? max(vote, sum) : vote + sum;
  }
  if (pc.agg == 0u) vote /= float(G);
  if (final_pass && j < pc.P) votes[kvh * pc.P + j] = vote;
}
