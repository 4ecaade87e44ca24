#version 450
// Causal attention for a chunk of T queries, for SIMD CPUs (lavapipe): each invocation owns QT
// query rows of one head (consecutive tokens) and walks that head's visible slots with an
// online softmax, loading K and V rows four values per load and using each loaded row for all
// QT queries. No shared memory and no barriers: on lavapipe those cost more than the cache
// traffic they save. GPUs use the tiled attn_prefill.comp. Same bindings and push constants.
//
// Every loop over head_dim is unrolled ([[unroll]]; HD is a specialization constant, so the
// trip count is known when the pipeline is built), leaving the key loop as the only loop that
// runs per key. llvmpipe (lavapipe) guards against endless loops with one counter per
// invocation that every loop back-edge in the shader decrements, starting from 65535
// (LP_MAX_TGSI_LOOP_ITERATIONS); at zero every loop exits early, silently. With rolled head_dim
// loops (Mesa unrolls them itself up to head_dim 128, not at 256) a key cost about 2 * HD / 4 + 1
// of them, so at head_dim 256 rows past ~430 keys stopped early and were left unwritten (Gemma
// 3's long-prompt bug). Unrolled, a key costs one, and the host splits longer rows into passes
// of at most pass_keys keys (op_attn_prefill): pass p walks keys lo + p * pass_keys onwards and
// carries the online softmax to the next pass in o (the unnormalised sums) and in state (the
// running max and sum), as attn_prefill.comp does.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;   // head_dim (a multiple of 4)
layout(constant_id = 2) const uint QT = 2;    // query rows per invocation
#define KV_K_BINDING 1
#define KV_V_BINDING 2
#define KV_LOAD4
#include "kv.glsl"
#define HEADS_BINDING 4
#include "heads.glsl"
layout(std430, binding = 0) readonly buffer Q { vec4 q4[]; };      // [T, n_head, HD], RoPE applied
layout(std430, binding = 3) buffer O { vec4 o4[]; };               // [T, n_head * HD]; between passes unnormalised
layout(std430, binding = 5) buffer State { vec2 state[]; };        // [T, n_head]: max, sum between passes
layout(push_constant) uniform PC {
  uint T; uint n_head; uint n_kv; uint slot0; float scale; uint window; uint ring; uint pass_keys; uint pass; uint n_pass;
} pc;

const uint D4 = HD / 4u;

void main() {
  const uint h = gl_WorkGroupID.y;
  const uint t0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * QT;
  if (t0 >= pc.T) return;
  const uint kvh = h / (pc.n_head / pc.n_kv);
  const uint off = head_offset(kvh);
  const uint first_visible = head_base(kvh) + pc.slot0;  // query t sees slots < first_visible + t + 1

  vec4 q[QT][D4], acc[QT][D4];
  float m[QT], l[QT];
  [[unroll]] for (uint r = 0; r < QT; ++r) {
    const uint t = min(t0 + r, pc.T - 1u);
    [[unroll]] for (uint d = 0; d < D4; ++d) q[r][d] = q4[(t * pc.n_head + h) * D4 + d] * pc.scale;
    if (pc.pass == 0u) {
      [[unroll]] for (uint d = 0; d < D4; ++d) acc[r][d] = vec4(0.0);
      m[r] = -1.0 / 0.0;
      l[r] = 0.0;
    } else {  // what the passes before summed
      [[unroll]] for (uint d = 0; d < D4; ++d) acc[r][d] = o4[(t * pc.n_head + h) * D4 + d];
      const vec2 ml = state[t * pc.n_head + h];
      m[r] = ml.x;
      l[r] = ml.y;
    }
  }
  const uint last = first_visible + min(t0 + QT, pc.T);  // slots the last row sees
  // a sliding window (base 0): row r sees keys j with first_visible + t0 + r - j < window
  const uint lo = pc.window != 0u && first_visible + t0 + 1u > pc.window ? first_visible + t0 + 1u - pc.window : 0u;
  const uint begin = lo + pc.pass * pc.pass_keys, end = min(last, begin + pc.pass_keys);  // this pass's keys
  for (uint j = begin; j < end; ++j) {
    const uint slot = key_slot(off, j, pc.ring);
    float s[QT];
    [[unroll]] for (uint r = 0; r < QT; ++r) s[r] = 0.0;
    [[unroll]] for (uint d = 0; d < D4; ++d) {
      const vec4 k = k_load4(slot, 4u * d);
      [[unroll]] for (uint r = 0; r < QT; ++r) s[r] += dot(q[r][d], k);
    }
    float p[QT];
    [[unroll]] for (uint r = 0; r < QT; ++r) {
      const bool visible = j <= first_visible + t0 + r &&  // causal: row r sees slots up to its own
                           (pc.window == 0u || first_visible + t0 + r - j < pc.window);
      const float m_new = visible ? max(m[r], s[r]) : m[r];
      p[r] = visible ? exp(s[r] - m_new) : 0.0;
      if (m_new != m[r]) {  // a new maximum: rescale what was summed so far (exp(-inf) = 0 at the start)
        const float alpha = exp(m[r] - m_new);
        l[r] *= alpha;
        [[unroll]] for (uint d = 0; d < D4; ++d) acc[r][d] *= alpha;
      }
      l[r] += p[r];
      m[r] = m_new;
    }
    [[unroll]] for (uint d = 0; d < D4; ++d) {
      const vec4 v = v_load4(slot, 4u * d);
      [[unroll]] for (uint r = 0; r < QT; ++r) acc[r][d] += p[r] * v;
    }
  }
  const bool final_pass = pc.pass + 1u == pc.n_pass;
  [[unroll]] for (uint r = 0; r < QT; ++r) {
    if (t0 + r >= pc.T) break;
    const uint row = (t0 + r) * pc.n_head + h;
    const float inv = final_pass ? 1.0 / l[r] : 1.0;
    [[unroll]] for (uint d = 0; d < D4; ++d) o4[row * D4 + d] = acc[r][d] * inv;
    if (!final_pass) state[row] = vec2(m[r], l[r]);
  }
}
