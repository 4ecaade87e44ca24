#version 450
// Writes K or V rows src [T, n_kv, HD] (f32), less the layer's centre for a rotated K cache
// (k_center.comp), into the cache (with a second plane of workgroups, V too when its type is K's), row t of head h at slot
// offset(h) + base(h) + slot0 + t (a sliding-window ring: offset(h) + (slot0 + t) % ring), converting
// to the cache's type KV (kv_format.h; layouts in kv.glsl). One invocation per pair of values
// (f32, f16, bf16) or per pair of 32-value blocks (the block types: two blocks share a scale
// word). The quantizers are ggml's (quantize_row_*_ref; iq4_nl as its cache copies do: the
// largest value's scale, then one weighted least-squares step); hq4 and hq3 (already rotated,
// hadamard.comp) try a few scales around the block's standard deviation on their Gaussian grid
// and keep the one with the least squared error, then refit it by least squares.
// ref::kv_encode_row (host/ref/kv_format_ref.cpp) is the CPU reference.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
#include "grids.glsl"
#include "kv_layout.glsl"
layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
// A second plane of workgroups (gl_WorkGroupID.z = 1) writes V of the same type in the same dispatch.
layout(std430, binding = 4) readonly buffer SrcV { float src_v[]; };
layout(std430, binding = 5) writeonly buffer DstV { uint dst_v[]; };
#define HEADS_BINDING 2
#include "heads.glsl"
layout(std430, binding = 3) readonly buffer Center { float center[]; };  // [n_kv, HD] (k_center.comp)
layout(push_constant) uniform PC { uint T; uint n_kv; uint slot0; uint ring; uint centered; } pc;

// Value i of src, less the layer's centre where it has one (a rotated K cache): i % (n_kv HD) is
// its head's and dimension's place in the centre.
bool plane_v = false;  // this workgroup writes V (binding 4 into 5)
float x_at(uint i) {
  if (plane_v) return src_v[i];
  return pc.centered != 0u ? src[i] - center[i % (pc.n_kv * HD)] : src[i];
}
void put(uint i, uint word) {
  if (plane_v)
    dst_v[i] = word;
  else
    dst[i] = word;
}

#if KV == SNAPVK_KV_F32 || KV == SNAPVK_KV_F16 || KV == SNAPVK_KV_BF16
const uint ITEMS = HD / 2u;
#else
const uint ITEMS = (HD / 32u + 1u) / 2u;
#endif

// bf16 of x, rounded to nearest even (ggml_compute_fp32_to_bf16)
uint bf16(float x) {
  const uint u = floatBitsToUint(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u >> 16) | 64u;  // NaN stays NaN
  return (u + (0x7FFFu + ((u >> 16) & 1u))) >> 16;
}

#if KV == SNAPVK_KV_Q8_0
// Quantizes values s .. s+32 as ggml's Q8_0 does (scale = amax / 127, round to nearest);
// writes the 8 words of int8 at dst[w0..] and returns the f16 scale bits.
uint store_block(uint s, uint w0) {
  float amax = 0.0;
  for (uint i = 0; i < 32u; ++i) amax = max(amax, abs(x_at(s + i)));
  const float d = amax / 127.0;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  for (uint w = 0; w < 8u; ++w) {
    uint word = 0u;
    for (uint b = 0; b < 4u; ++b) {
      const float v = x_at(s + 4u * w + b) * id;
      word |= (uint(int(sign(v) * floor(abs(v) + 0.5))) & 0xFFu) << (8u * b);  // roundf: halves away from 0
    }
    put(w0 + w, word);
  }
  return packHalf2x16(vec2(d, 0.0)) & 0xFFFFu;
}
#elif KV != SNAPVK_KV_F32 && KV != SNAPVK_KV_F16 && KV != SNAPVK_KV_BF16

#if KV == SNAPVK_KV_HQ4 || KV == SNAPVK_KV_HQ3
// The nearest grid code of x at scale id = 1 / d: a sign bit above a magnitude index.
#if KV == SNAPVK_KV_HQ4
const float SIGMA = SNAPVK_HQ4_SIGMA;
uint hq_code(float x, float id) {
  const float a = abs(x) * id;
  const uint m = uint(a >= 12.0) + uint(a >= 24.5) + uint(a >= 37.5) + uint(a >= 51.0) + uint(a >= 66.5) +
                 uint(a >= 85.5) + uint(a >= 111.5);
  return m | (x < 0.0 ? 8u : 0u);
}
float hq_value(uint q) { return hq4_grid(uvec4(q)).x; }
#else
const float SIGMA = SNAPVK_HQ3_SIGMA;
uint hq_code(float x, float id) {
  const float a = abs(x) * id;
  const uint m = uint(a >= 29.5) + uint(a >= 62.0) + uint(a >= 103.0);
  return m | (x < 0.0 ? 4u : 0u);
}
float hq_value(uint q) { return hq3_grid(uvec4(q)).x; }
#endif
#elif KV == SNAPVK_KV_IQ4_NL
// ggml's best_index_int8 over kvalues_iq4nl: the nearest (a tie goes up)
uint iq4nl_code(float x) {
  return uint(x >= -115.5) + uint(x >= -93.5) + uint(x >= -74.0) + uint(x >= -57.0) + uint(x >= -42.0) +
         uint(x >= -28.5) + uint(x >= -16.0) + uint(x >= -4.5) + uint(x >= 7.0) + uint(x >= 19.0) + uint(x >= 31.5) +
         uint(x >= 45.5) + uint(x >= 61.0) + uint(x >= 79.0) + uint(x >= 101.0);
}
#endif

// Quantizes the 32 values from s on into block b of the row at word r: writes its codes (and
// high bits) and returns its scale d and offset m.
vec2 store_block(uint s, uint r, uint b) {
  float x[32];
  [[unroll]] for (uint i = 0; i < 32u; ++i) x[i] = x_at(s + i);
  uint q[32];
  float d = 0.0, m = 0.0;
#if KV == SNAPVK_KV_Q4_0 || KV == SNAPVK_KV_Q5_0
  const float levels = KV == SNAPVK_KV_Q4_0 ? 8.0 : 16.0;
  float amax = 0.0, mx = 0.0;  // mx: the value of largest magnitude, its sign kept
  [[unroll]] for (uint i = 0; i < 32u; ++i)
    if (amax < abs(x[i])) amax = abs(x[i]), mx = x[i];
  d = mx / -levels;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i) q[i] = uint(clamp(int(x[i] * id + levels + 0.5), 0, int(2.0 * levels) - 1));
#elif KV == SNAPVK_KV_Q4_1 || KV == SNAPVK_KV_Q5_1
  const float top = KV == SNAPVK_KV_Q4_1 ? 15.0 : 31.0;
  float mn = x[0], mx = x[0];
  [[unroll]] for (uint i = 1; i < 32u; ++i) mn = min(mn, x[i]), mx = max(mx, x[i]);
  d = (mx - mn) / top;
  m = mn;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i) q[i] = uint(clamp(int((x[i] - mn) * id + 0.5), 0, int(top)));
#elif KV == SNAPVK_KV_IQ4_NL
  float amax = 0.0, mx = 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i)
    if (amax < abs(x[i])) amax = abs(x[i]), mx = x[i];
  d = mx / -127.0;
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  float sumqx = 0.0, sumq2 = 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i) {
    q[i] = iq4nl_code(x[i] * id);
    const float g = iq4nl4(uvec4(q[i])).x, w = x[i] * x[i];
    sumqx += w * g * x[i];
    sumq2 += w * g * g;
  }
  if (sumq2 > 0.0) d = sumqx / sumq2;
#else  // hq4, hq3
  float amax = 0.0, ss = 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i) amax = max(amax, abs(x[i])), ss += x[i] * x[i];
  const float rms = sqrt(ss / 32.0);
  // candidate c: c < 5 scales the standard deviation to the grid's unit, c == 5 fits the largest value
  float best = uintBitsToFloat(0x7F800000u);  // +inf
  for (uint c = 0; c < 6u; ++c) {
    const float dc = c < 5u ? rms * (0.8 + 0.1 * float(c)) / SIGMA : amax / 127.0;
    const float id = dc != 0.0 ? 1.0 / dc : 0.0;
    float err = 0.0;
    [[unroll]] for (uint i = 0; i < 32u; ++i) {
      const float e = x[i] - hq_value(hq_code(x[i], id)) * dc;
      err += e * e;
    }
    if (err < best) best = err, d = dc;
  }
  const float id = d != 0.0 ? 1.0 / d : 0.0;
  float sumqx = 0.0, sumq2 = 0.0;
  [[unroll]] for (uint i = 0; i < 32u; ++i) {
    q[i] = hq_code(x[i], id);
    const float g = hq_value(q[i]);
    sumqx += g * x[i];
    sumq2 += g * g;
  }
  if (sumq2 > 0.0) d = sumqx / sumq2;
#endif
#if KV == SNAPVK_KV_HQ3
  [[unroll]] for (uint w = 0; w < 2u; ++w) {
    uint word = 0u;
    [[unroll]] for (uint j = 0; j < 16u; ++j) word |= (q[16u * w + j] & 3u) << (2u * j);
    put(r + 2u * b + w, word);
  }
  uint high = 0u;
  [[unroll]] for (uint j = 0; j < 32u; ++j) high |= ((q[j] >> 2) & 1u) << j;
  put(r + kv_high_words(KV) + b, high);
#else
  [[unroll]] for (uint w = 0; w < 4u; ++w) {
    uint word = 0u;
    [[unroll]] for (uint j = 0; j < 8u; ++j) word |= (q[8u * w + j] & 0xFu) << (4u * j);
    put(r + 4u * b + w, word);
  }
#if KV == SNAPVK_KV_Q5_0 || KV == SNAPVK_KV_Q5_1
  uint high = 0u;
  [[unroll]] for (uint j = 0; j < 32u; ++j) high |= ((q[j] >> 4) & 1u) << j;
  put(r + kv_high_words(KV) + b, high);
#endif
#endif
  return vec2(d, m);
}
#endif

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.T * pc.n_kv * ITEMS) return;
  plane_v = gl_WorkGroupID.z == 1u;
  const uint p = idx % ITEMS;
  const uint h = (idx / ITEMS) % pc.n_kv;
  const uint t = idx / (ITEMS * pc.n_kv);
  const uint s = (t * pc.n_kv + h) * HD;
  const uint slot = key_slot(head_offset(h), head_base(h) + pc.slot0 + t, pc.ring);
  const uint r = slot * kv_row_words(KV);
#if KV == SNAPVK_KV_F32
  put(r + 2u * p, floatBitsToUint(x_at(s + 2u * p)));
  put(r + 2u * p + 1u, floatBitsToUint(x_at(s + 2u * p + 1u)));
#elif KV == SNAPVK_KV_F16
  put(r + p, packHalf2x16(vec2(x_at(s + 2u * p), x_at(s + 2u * p + 1u))));
#elif KV == SNAPVK_KV_BF16
  put(r + p, bf16(x_at(s + 2u * p)) | (bf16(x_at(s + 2u * p + 1u)) << 16));
#elif KV == SNAPVK_KV_Q8_0
  uint scales = store_block(s + 64u * p, r + 16u * p);
  if (2u * p + 1u < HD / 32u) scales |= store_block(s + 64u * p + 32u, r + 16u * p + 8u) << 16;
  put(r + HD / 4u + p, scales);
#else
  const uint b = 2u * p, sw = r + kv_scale_words(KV);
  const vec2 dm0 = store_block(s + 32u * b, r, b);
  const bool two = b + 1u < HD / 32u;
  const vec2 dm1 = two ? store_block(s + 32u * b + 32u, r, b + 1u) : vec2(0.0);
#if KV == SNAPVK_KV_Q4_1 || KV == SNAPVK_KV_Q5_1
  put(sw + b, packHalf2x16(dm0));
  if (two) put(sw + b + 1u, packHalf2x16(dm1));
#else
  put(sw + p, packHalf2x16(vec2(dm0.x, dm1.x)));
#endif
#endif
}
