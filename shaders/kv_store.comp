#version 450
// Writes K or V rows src [T, n_kv, HD] (f32) into the cache, row t of head h at slot
// offset(h) + base(h) + slot0 + t (a sliding-window ring: offset(h) + (slot0 + t) % ring), converting
// to the cache's type. One invocation per pair of
// values (f32/f16) or per pair of 32-value blocks (q8_0: two blocks share one scale word).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(std430, binding = 0) readonly buffer Src { float src[]; };
#if defined(KV_F32)
layout(std430, binding = 1) writeonly buffer Dst { float dst[]; };
const uint ITEMS = HD / 2u;
#else
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
#if defined(KV_F16)
const uint ITEMS = HD / 2u;
#else
const uint KV_ROW_WORDS = HD / 4u + (HD / 32u + 1u) / 2u;
const uint ITEMS = (HD / 32u + 1u) / 2u;
#endif
#endif
#define HEADS_BINDING 2
#include "heads.glsl"
layout(push_constant) uniform PC { uint T; uint n_kv; uint slot0; uint ring; } pc;

#if defined(KV_Q8_0)
// Quantizes src[s .. s+32) as ggml's Q8_0 does (scale = amax / 127, round to nearest);
// writes the 8 words of int8 at dst[w0..] and returns the f16 scale bits.
uint store_block(uint s, uint w0) {
  float amax = 0.0;
  for (uint i = 0; i < 32u; ++i) amax = max(amax, abs(src[s + i]));
  const float d = amax / 127.0;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  for (uint w = 0; w < 8u; ++w) {
    uint word = 0u;
    for (uint b = 0; b < 4u; ++b) {
      const float v = src[s + 4u * w + b] * id;
      word |= (uint(int(sign(v) * floor(abs(v) + 0.5))) & 0xFFu) << (8u * b);  // roundf: halves away from 0
    }
    dst[w0 + w] = word;
  }
  return packHalf2x16(vec2(d, 0.0)) & 0xFFFFu;
}
#endif

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.T * pc.n_kv * ITEMS) return;
  const uint p = idx % ITEMS;
  const uint h = (idx / ITEMS) % pc.n_kv;
  const uint t = idx / (ITEMS * pc.n_kv);
  const uint s = (t * pc.n_kv + h) * HD;
  const uint slot = key_slot(head_offset(h), head_base(h) + pc.slot0 + t, pc.ring);
#if defined(KV_F32)
  dst[slot * HD + 2u * p] = src[s + 2u * p];
  dst[slot * HD + 2u * p + 1u] = src[s + 2u * p + 1u];
#elif defined(KV_F16)
  dst[(slot * HD) / 2u + p] = packHalf2x16(vec2(src[s + 2u * p], src[s + 2u * p + 1u]));
#else
  const uint r = slot * KV_ROW_WORDS;
  uint scales = store_block(s + 64u * p, r + 16u * p);
  if (2u * p + 1u < HD / 32u) scales |= store_block(s + 64u * p + 32u, r + 16u * p + 8u) << 16;
  dst[r + HD / 4u + p] = scales;
#endif
}
