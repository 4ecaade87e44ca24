// KV-cache access by storage type (KV_F32, KV_F16 or KV_Q8_0) for kernels that read K at
// binding KV_K_BINDING and V at KV_V_BINDING. Needs HD (head_dim, a specialization constant)
// declared before the include. A cache is a list of rows ("slots") of HD elements; which
// slots belong to which KV head comes from the heads table (see heads.glsl).
//   f32:  HD floats per slot
//   f16:  HD halves per slot, packed in pairs
//   q8_0: HD int8 (HD/4 words), then HD/32 f16 scales packed in pairs: one scale per 32 values
#if defined(KV_F32)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { float kdata[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { float vdata[]; };
vec2 k_load2(uint slot, uint d) { const uint i = slot * HD + d; return vec2(kdata[i], kdata[i + 1u]); }
vec2 v_load2(uint slot, uint d) { const uint i = slot * HD + d; return vec2(vdata[i], vdata[i + 1u]); }
#if defined(KV_LOAD4)
// Four values in one load (d % 4 == 0): SIMD CPUs pay per load, not per value.
layout(std430, binding = KV_K_BINDING) readonly buffer KCache4 { vec4 k4[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache4 { vec4 v4[]; };
vec4 k_load4(uint slot, uint d) { return k4[(slot * HD + d) >> 2]; }
vec4 v_load4(uint slot, uint d) { return v4[(slot * HD + d) >> 2]; }
#endif
#elif defined(KV_F16)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { uint kdata[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { uint vdata[]; };
vec2 k_load2(uint slot, uint d) { return unpackHalf2x16(kdata[(slot * HD + d) >> 1]); }
vec2 v_load2(uint slot, uint d) { return unpackHalf2x16(vdata[(slot * HD + d) >> 1]); }
#if defined(KV_LOAD4)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache4 { uvec2 k4[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache4 { uvec2 v4[]; };
vec4 k_load4(uint slot, uint d) { const uvec2 w = k4[(slot * HD + d) >> 2]; return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
vec4 v_load4(uint slot, uint d) { const uvec2 w = v4[(slot * HD + d) >> 2]; return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
#endif
#elif defined(KV_Q8_0)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { uint kdata[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { uint vdata[]; };
const uint KV_ROW_WORDS = HD / 4u + (HD / 32u + 1u) / 2u;
vec2 q8_pair(uint w, uint scale_word, uint d) {
  const uint sh = (d & 3u) * 8u;  // d is even: the pair is bytes sh and sh + 8 of the word
  const int a = int(w << (24u - sh)) >> 24;
  const int b = int(w << (16u - sh)) >> 24;
  return vec2(a, b) * unpackHalf2x16(scale_word)[(d / 32u) & 1u];
}
vec2 k_load2(uint slot, uint d) {
  const uint r = slot * KV_ROW_WORDS;
  return q8_pair(kdata[r + d / 4u], kdata[r + HD / 4u + d / 64u], d);
}
vec2 v_load2(uint slot, uint d) {
  const uint r = slot * KV_ROW_WORDS;
  return q8_pair(vdata[r + d / 4u], vdata[r + HD / 4u + d / 64u], d);
}
vec4 q8_quad(uint w, uint scale_word, uint d) {  // d % 4 == 0: the whole word
  const ivec4 b = ivec4(int(w << 24) >> 24, int(w << 16) >> 24, int(w << 8) >> 24, int(w) >> 24);
  return vec4(b) * unpackHalf2x16(scale_word)[(d / 32u) & 1u];
}
vec4 k_load4(uint slot, uint d) {
  const uint r = slot * KV_ROW_WORDS;
  return q8_quad(kdata[r + d / 4u], kdata[r + HD / 4u + d / 64u], d);
}
vec4 v_load4(uint slot, uint d) {
  const uint r = slot * KV_ROW_WORDS;
  return q8_quad(vdata[r + d / 4u], vdata[r + HD / 4u + d / 64u], d);
}
#else
#error "kv.glsl needs KV_F32, KV_F16 or KV_Q8_0"
#endif
