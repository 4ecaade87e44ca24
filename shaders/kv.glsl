// KV-cache access by storage type for kernels that read K at binding KV_K_BINDING and V at
// KV_V_BINDING. KV_K and KV_V name each cache's type (kv_format.h; a kernel that reads only K
// sets KV_K). Needs HD (head_dim, a specialization constant) declared before the include. A
// cache is a list of rows ("slots") of HD values; which slots belong to which KV head comes
// from the heads table (see heads.glsl). k_load2 / v_load2 return values d, d+1 of a slot
// (d even), k_load4 / v_load4 values d .. d+3 (d % 4 == 0).
//
// Row layouts, in 32-bit words (ref::kv_encode_row is their CPU reference; block types need
// HD % 32 == 0, one block per 32 values, B = HD / 32 blocks):
//   f32:   HD floats
//   f16:   HD halves, bf16: HD bfloat16s, packed in pairs (value 2i in the low half)
//   q8_0:  HD int8 (HD/4 words), then B f16 scales in pairs: x = d * q
//   4-bit: HD nibbles (HD/8 words, value 8i + j in bits 4j..), then per type
//            q4_0, iq4_nl, hq4: B f16 scales in pairs
//            q4_1:  B words of (d, m) halves: x = d * q + m
//            q5_0:  B words of fifth bits (bit j: value 32b + j), then B f16 scales in pairs
//            q5_1:  B words of fifth bits, then B words of (d, m)
//          x = d * (q - 8) (q4_0), d * kvalues_iq4nl[q] (iq4_nl), d * hq4_grid(q) (hq4),
//          d * (q - 16) (q5_0, q with its fifth bit), d * q + m (q5_1)
//   hq3:   HD 2-bit low codes (HD/16 words, value 16i + j in bits 2j..), B words of third
//          bits, then B f16 scales in pairs: x = d * hq3_grid(q)
// hq4 and hq3 hold each head's vectors after a fixed orthogonal rotation (hadamard.comp); their
// readers see rotated values, and the forward pass rotates queries and outputs to match.
#include "grids.glsl"

#if !defined(KV_K)
#error "kv.glsl needs KV_K (and KV_V where V is read)"
#endif
#if !defined(KV_V)
#define KV_V KV_K
#endif
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { uint kw[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { uint vw[]; };
#if defined(KV_LOAD4)
// f32, f16 and bf16 rows four values in one load (d % 4 == 0): SIMD CPUs pay per load, not per value.
layout(std430, binding = KV_K_BINDING) readonly buffer KCache4 { uvec4 kw4[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache4 { uvec4 vw4[]; };
layout(std430, binding = KV_K_BINDING) readonly buffer KCache2 { uvec2 kw2[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache2 { uvec2 vw2[]; };
#endif

// The cache's word i; `v` is a constant at every call, so each read names one buffer.
uint kv_word(const bool v, uint i) { return v ? vw[i] : kw[i]; }

#include "kv_layout.glsl"
// Block b's scale d and offset m (0 for the symmetric types) of the row at word r.
vec2 kv_scale(const bool v, const uint t, uint r, uint b) {
  const uint s = r + kv_scale_words(t);
  if (t == SNAPVK_KV_Q4_1 || t == SNAPVK_KV_Q5_1) return unpackHalf2x16(kv_word(v, s + b));
  return vec2(unpackHalf2x16(kv_word(v, s + b / 2u))[b & 1u], 0.0);
}
// Four bits of word w from bit i on, one per lane.
uvec4 kv_bits4(uint w, uint i) { return (uvec4(w) >> (uvec4(0u, 1u, 2u, 3u) + i)) & 1u; }

vec4 kv_load4(const bool v, const uint t, uint slot, uint d) {
  const uint r = slot * kv_row_words(t);
  if (t == SNAPVK_KV_F32) {
#if defined(KV_LOAD4)
    return uintBitsToFloat(v ? vw4[(r + d) >> 2] : kw4[(r + d) >> 2]);
#else
    return uintBitsToFloat(uvec4(kv_word(v, r + d), kv_word(v, r + d + 1u), kv_word(v, r + d + 2u), kv_word(v, r + d + 3u)));
#endif
  }
  if (t == SNAPVK_KV_F16 || t == SNAPVK_KV_BF16) {
#if defined(KV_LOAD4)
    const uvec2 w = v ? vw2[(r + d / 2u) >> 1] : kw2[(r + d / 2u) >> 1];
#else
    const uvec2 w = uvec2(kv_word(v, r + d / 2u), kv_word(v, r + d / 2u + 1u));
#endif
    if (t == SNAPVK_KV_F16) return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    return uintBitsToFloat(uvec4(w.x << 16, w.x & 0xFFFF0000u, w.y << 16, w.y & 0xFFFF0000u));
  }
  const uint b = d / 32u;
  const vec2 dm = kv_scale(v, t, r, b);
  if (t == SNAPVK_KV_Q8_0) {
    const uint w = kv_word(v, r + d / 4u);
    return vec4(ivec4(w << 24, w << 16, w << 8, w) >> 24) * dm.x;
  }
  if (t == SNAPVK_KV_HQ3) {
    const uint lo = kv_word(v, r + d / 16u) >> (2u * (d % 16u));
    const uvec4 q = ((uvec4(lo) >> uvec4(0u, 2u, 4u, 6u)) & 3u) | (kv_bits4(kv_word(v, r + kv_high_words(t) + b), d % 32u) << 2);
    return hq3_grid(q) * dm.x;
  }
  uvec4 q = (uvec4(kv_word(v, r + d / 8u) >> (4u * (d % 8u))) >> uvec4(0u, 4u, 8u, 12u)) & 0xFu;
  if (t == SNAPVK_KV_Q4_0) return (vec4(q) - 8.0) * dm.x;
  if (t == SNAPVK_KV_Q4_1) return vec4(q) * dm.x + dm.y;
  if (t == SNAPVK_KV_IQ4_NL) return iq4nl4(q) * dm.x;
  if (t == SNAPVK_KV_HQ4) return hq4_grid(q) * dm.x;
  q |= kv_bits4(kv_word(v, r + kv_high_words(t) + b), d % 32u) << 4;
  if (t == SNAPVK_KV_Q5_0) return (vec4(q) - 16.0) * dm.x;
  return vec4(q) * dm.x + dm.y;  // q5_1
}

vec2 kv_load2(const bool v, const uint t, uint slot, uint d) {
  const uint r = slot * kv_row_words(t);
  if (t == SNAPVK_KV_F32) return uintBitsToFloat(uvec2(kv_word(v, r + d), kv_word(v, r + d + 1u)));
  if (t == SNAPVK_KV_F16) return unpackHalf2x16(kv_word(v, r + d / 2u));
  if (t == SNAPVK_KV_BF16) {
    const uint w = kv_word(v, r + d / 2u);
    return uintBitsToFloat(uvec2(w << 16, w & 0xFFFF0000u));
  }
  const vec4 x = kv_load4(v, t, slot, d & ~3u);  // a block type: the word holding four
  return (d & 2u) != 0u ? x.zw : x.xy;
}

vec2 k_load2(uint slot, uint d) { return kv_load2(false, KV_K, slot, d); }
vec4 k_load4(uint slot, uint d) { return kv_load4(false, KV_K, slot, d); }
vec2 v_load2(uint slot, uint d) { return kv_load2(true, KV_V, slot, d); }
vec4 v_load4(uint slot, uint d) { return kv_load4(true, KV_V, slot, d); }
