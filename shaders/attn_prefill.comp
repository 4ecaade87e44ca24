#version 450
// Causal multi-head attention for a chunk of T queries with grouped-query heads. The queries
// are the appended tokens slot0 .. slot0+T-1 of each KV head's cache region; query t sees the
// head's retained entries (base) and the appended slots up to its own. For a full cache base
// is 0 and slot0 is the position. Tiled with an online softmax (flash attention): a workgroup
// owns BR query rows of one head and walks the keys in blocks of BC through shared memory,
// so the L x L score matrix never exists.
//
// llvmpipe stops every loop of an invocation after 65535 iterations in all
// (host/kernels/loop_bounds.h). The loops over a block's BC keys are unrolled and a score's
// head_dim loop is unrolled DU at a time, so a block costs the K/V loads and HD / DU per score
// (about 140 at head_dim 256 on lavapipe). The host walks long rows in
// passes of pass_keys keys (a multiple of BC), as many as attn_prefill_loops() allows: pass p
// takes the blocks from lo + p * pass_keys on and carries the online softmax to the next pass
// in o (unnormalised) and in state (each row's running max and sum).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;   // head_dim
layout(constant_id = 2) const uint BR = 16;   // query rows per workgroup
layout(constant_id = 3) const uint BC = 16;   // keys per block
#define KV_K_BINDING 1
#define KV_V_BINDING 2
#include "kv.glsl"
#define HEADS_BINDING 4
#include "heads.glsl"
layout(std430, binding = 0) readonly buffer Q { float q[]; };      // [T, n_head, HD], RoPE applied
layout(std430, binding = 3) buffer O { float o[]; };               // [T, n_head * HD]; between passes unnormalised
layout(std430, binding = 5) buffer State { vec2 state[]; };        // [T, n_head]: max, sum between passes
layout(push_constant) uniform PC {
  uint T; uint n_head; uint n_kv; uint slot0; float scale; uint window; uint ring; uint pass_keys; uint pass; uint n_pass;
} pc;

const uint PER_THREAD = (BR * HD + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;
const uint DU = HD % 8u == 0u ? 8u : (HD % 4u == 0u ? 4u : 2u);  // head_dim values per iteration of a score
shared float Qs[BR * HD];
shared float KVs[BC * HD];  // K block, then V block
shared float Ss[BR * BC];
shared float m_s[BR], l_s[BR], alpha_s[BR];

void main() {
  const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationID.x;
  const uint h = gl_WorkGroupID.y;
  const uint kvh = h / (pc.n_head / pc.n_kv);
  const uint q0 = gl_WorkGroupID.x * BR;
  const uint rows = min(BR, pc.T - q0);
  const uint off = head_offset(kvh);
  const uint first_visible = head_base(kvh) + pc.slot0 + q0;  // row r sees slots < first_visible + r + 1

  for (uint e = tid; e < BR * HD; e += WG) {
    const uint r = e / HD, d = e % HD;
    Qs[e] = r < rows ? q[((q0 + r) * pc.n_head + h) * HD + d] * pc.scale : 0.0;
  }
  for (uint r = tid; r < BR; r += WG) {  // each row's max and sum so far
    vec2 ml = vec2(-1.0 / 0.0, 0.0);
    if (pc.pass != 0u && r < rows) ml = state[(q0 + r) * pc.n_head + h];
    m_s[r] = ml.x;
    l_s[r] = ml.y;
  }
  float acc[PER_THREAD];
  [[unroll]] for (uint k = 0; k < PER_THREAD; ++k) {
    const uint e = tid + k * WG, r = e / HD;
    acc[k] = 0.0;
    if (pc.pass != 0u && e < BR * HD && r < rows) acc[k] = o[((q0 + r) * pc.n_head + h) * HD + e % HD];
  }

  const uint n_keys = first_visible + rows;
  // a sliding window (base 0): row r sees keys j with first_visible + r - j < window
  const uint lo = pc.window != 0u && first_visible + 1u > pc.window ? first_visible + 1u - pc.window : 0u;
  // this pass's blocks
  const uint begin = lo / BC * BC + pc.pass * pc.pass_keys, end = min(n_keys, begin + pc.pass_keys);
  for (uint kb = begin; kb < end; kb += BC) {
    barrier();
    for (uint e = tid; e < BC * HD / 2u; e += WG) {
      const uint c = (2u * e) / HD, d = (2u * e) % HD;
      const vec2 kv = kb + c < n_keys ? k_load2(key_slot(off, kb + c, pc.ring), d) : vec2(0.0);
      KVs[c * HD + d] = kv.x;
      KVs[c * HD + d + 1u] = kv.y;
    }
    barrier();
    for (uint e = tid; e < BR * BC; e += WG) {
      const uint r = e / BC, c = e % BC;
      float s = -1.0 / 0.0;
      if (r < rows && kb + c <= first_visible + r && (pc.window == 0u || first_visible + r - (kb + c) < pc.window)) {
        s = 0.0;
        for (uint d0 = 0; d0 < HD; d0 += DU)
          [[unroll]] for (uint u = 0; u < DU; ++u) s += Qs[r * HD + d0 + u] * KVs[c * HD + d0 + u];
      }
      Ss[e] = s;
    }
    barrier();
    for (uint r = tid; r < BR; r += WG) {
      const float m_old = m_s[r];
      float m_new = m_old;
      [[unroll]] for (uint c = 0; c < BC; ++c) m_new = max(m_new, Ss[r * BC + c]);
      if (m_new == -1.0 / 0.0) {  // nothing visible yet (padding rows)
        alpha_s[r] = 1.0;
        [[unroll]] for (uint c = 0; c < BC; ++c) Ss[r * BC + c] = 0.0;
        continue;
      }
      float sum = 0.0;
      [[unroll]] for (uint c = 0; c < BC; ++c) {
        const float p = exp(Ss[r * BC + c] - m_new);
        Ss[r * BC + c] = p;
        sum += p;
      }
      const float alpha = exp(m_old - m_new);
      alpha_s[r] = alpha;
      l_s[r] = l_s[r] * alpha + sum;
      m_s[r] = m_new;
    }
    for (uint e = tid; e < BC * HD / 2u; e += WG) {  // V block: K is no longer read after the barrier above
      const uint c = (2u * e) / HD, d = (2u * e) % HD;
      const vec2 kv = kb + c < n_keys ? v_load2(key_slot(off, kb + c, pc.ring), d) : vec2(0.0);
      KVs[c * HD + d] = kv.x;
      KVs[c * HD + d + 1u] = kv.y;
    }
    barrier();
    [[unroll]] for (uint k = 0; k < PER_THREAD; ++k) {
      const uint e = tid + k * WG;
      if (e < BR * HD) {
        const uint r = e / HD, d = e % HD;
        float a = acc[k] * alpha_s[r];
        [[unroll]] for (uint c = 0; c < BC; ++c) a += Ss[r * BC + c] * KVs[c * HD + d];
        acc[k] = a;
      }
    }
  }
  barrier();
  const bool final_pass = pc.pass + 1u == pc.n_pass;
  [[unroll]] for (uint k = 0; k < PER_THREAD; ++k) {
    const uint e = tid + k * WG;
    if (e < BR * HD) {
      const uint r = e / HD, d = e % HD;
      if (r < rows) o[((q0 + r) * pc.n_head + h) * HD + d] = final_pass ? acc[k] / l_s[r] : acc[k];
    }
  }
  if (!final_pass)
    for (uint r = tid; r < rows; r += WG) state[(q0 + r) * pc.n_head + h] = vec2(m_s[r], l_s[r]);
}
