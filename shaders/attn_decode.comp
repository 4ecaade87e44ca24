#version 450
// Decode attention, split over the cache (flash-decoding): workgroup (s, kvh) scores the G
// query heads that share KV head kvh against that head's slots [s*CHUNK, (s+1)*CHUNK),
// reading each K/V row once for all G heads, and writes an unnormalised partial
// (o[HD], max, sum) per query head; attn_combine merges the splits. With one split (a cache of
// at most CHUNK slots) it writes the normalised output itself and attn_combine is not run. Head kvh holds
// base(kvh) + n_appended valid slots: retained prompt entries, then the generated tokens. A
// sliding-window layer (window > 0, base 0) attends to the last `window` of them, kept in a ring.
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint G = 1;        // query heads per KV head
layout(constant_id = 3) const uint CHUNK = 256;  // cache slots per workgroup
#define KV_K_BINDING 1
#define KV_V_BINDING 2
#include "kv.glsl"
#define HEADS_BINDING 4
#include "heads.glsl"
layout(std430, binding = 0) readonly buffer Q { float q[]; };             // [n_head, HD], RoPE applied
layout(std430, binding = 3) writeonly buffer P { float part[]; };         // [n_head][n_split][HD + 2]
layout(std430, binding = 5) writeonly buffer O { float o[]; };            // [n_head, HD]: one split's output
layout(push_constant) uniform PC { uint n_appended; uint n_split; float scale; uint window; uint ring; } pc;

shared float qs[G * HD];
shared float ps[G * CHUNK];
shared float sums[G];  // each head's softmax denominator
// Values per K/V load: four where head_dim allows (a block type's load decodes a word of them)
const uint DS = HD % 4u == 0u ? 4u : 2u;

void main() {
  const uint WG = gl_WorkGroupSize.x, tid = gl_LocalInvocationID.x;
  const uint s = gl_WorkGroupID.x, kvh = gl_WorkGroupID.y;
  const uint len = head_base(kvh) + pc.n_appended;
  const uint lo = pc.window != 0u && len > pc.window ? len - pc.window : 0u;  // a sliding window: the last `window`
  const uint j0 = s * CHUNK;
  const uint n = j0 < len - lo ? min(CHUNK, len - lo - j0) : 0u;
  const uint first = lo + j0, off = head_offset(kvh);

  for (uint e = tid; e < G * HD; e += WG) qs[e] = q[(kvh * G) * HD + e] * pc.scale;
  barrier();
  for (uint j = tid; j < CHUNK; j += WG) {
    float sc[G];
    [[unroll]] for (uint g = 0; g < G; ++g) sc[g] = -1.0 / 0.0;
    if (j < n) {
      [[unroll]] for (uint g = 0; g < G; ++g) sc[g] = 0.0;
      const uint slot = key_slot(off, first + j, pc.ring);
      for (uint d = 0; d < HD; d += DS) {
        const vec4 k = DS == 4u ? k_load4(slot, d) : vec4(k_load2(slot, d), 0.0, 0.0);
        [[unroll]] for (uint g = 0; g < G; ++g) {
          const uint b = g * HD + d;
          sc[g] += qs[b] * k.x + qs[b + 1u] * k.y;
          if (DS == 4u) sc[g] += qs[b + 2u] * k.z + qs[b + 3u] * k.w;
        }
      }
    }
    [[unroll]] for (uint g = 0; g < G; ++g) ps[g * CHUNK + j] = sc[g];
  }
  barrier();
  [[unroll]] for (uint g = 0; g < G; ++g) {
    float m = -1.0 / 0.0;
    for (uint j = tid; j < n; j += WG) m = max(m, ps[g * CHUNK + j]);
    m = workgroup_max(m);
    float l = 0.0;
    for (uint j = tid; j < CHUNK; j += WG) {
      const float p = j < n ? exp(ps[g * CHUNK + j] - m) : 0.0;
      ps[g * CHUNK + j] = p;
      l += p;
    }
    l = workgroup_sum(l);
    const uint out_base = ((kvh * G + g) * pc.n_split + s) * (HD + 2u);
    if (tid == 0) {
      part[out_base + HD] = m;
      part[out_base + HD + 1u] = l;
      sums[g] = l;
    }
  }
  barrier();
  for (uint e = tid; e < G * HD / DS; e += WG) {
    const uint g = (DS * e) / HD, d = (DS * e) % HD;
    vec4 a = vec4(0.0);
    for (uint j = 0; j < n; ++j) {
      const uint slot = key_slot(off, first + j, pc.ring);
      a += ps[g * CHUNK + j] * (DS == 4u ? v_load4(slot, d) : vec4(v_load2(slot, d), 0.0, 0.0));
    }
    if (pc.n_split == 1u) {  // the whole cache in one split: the output itself (attn_combine's a / l)
      const uint ob = (kvh * G + g) * HD + d;
      a /= sums[g];
      o[ob] = a.x;
      o[ob + 1u] = a.y;
      if (DS == 4u) {
        o[ob + 2u] = a.z;
        o[ob + 3u] = a.w;
      }
      continue;
    }
    const uint out_base = ((kvh * G + g) * pc.n_split + s) * (HD + 2u);
    part[out_base + d] = a.x;
    part[out_base + d + 1u] = a.y;
    if (DS == 4u) {
      part[out_base + d + 2u] = a.z;
      part[out_base + d + 3u] = a.w;
    }
  }
}
