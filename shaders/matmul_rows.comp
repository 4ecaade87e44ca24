#version 450
// Y[m, n] = sum_k X[m, k] * W[n, k], for SIMD CPUs (lavapipe): each invocation owns a TM x TN
// block of outputs and reads X and W directly (the CPU caches do what shared memory does on a
// GPU), four k at a time. On lavapipe every non-uniform load is a per-invocation scalar loop,
// so what counts is loads per multiply: one vec4 load brings 4 values, and each loaded vec4
// feeds TN (or TM) dot products. GPUs use the tiled matmul.comp (these loads would not coalesce).
// Needs K % 4 == 0 (op_matmul falls back to matmul.comp otherwise). Rows of Y lie ldy floats apart,
// as in matmul.comp.
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 4;  // token rows per invocation
const uint TN = 4;                          // output columns per invocation
layout(std430, binding = 1) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint M; uint N; uint K; uint ldy; } pc;

#if !defined(W_F32)
// Four bytes starting at an even offset o (ggml blocks of 18, 22, 34, 110, 210 bytes are only 2-byte aligned).
// The second word is read only when the bytes straddle it (clamped otherwise), so nothing past
// byte o + 3 is read.
uint bytes4(uint o) {
  const uint a = wdata[o >> 2], b = wdata[(o + 3u) >> 2];
  return (o & 2u) == 0u ? a : (a >> 16) | (b << 16);
}
// Bits 0..3 of b moved to bit 0 of bytes 0..3 (the four shifted copies do not overlap).
uint spread4(uint b) { return ((b & 0xFu) * 0x00204081u) & 0x01010101u; }
#endif

#if defined(W_Q4_K) || defined(W_Q5_K)
// The 6-bit scale and min of sub-block g (0..7) of the Q4_K/Q5_K block at byte blk, from the
// three words of its 12-byte scales (weights.glsl's k_scale_min reads bytes): scales[k] for k = g, g + 4
// and (g >= 4) g - 4.
uvec2 k_scale_min_words(uint blk, uint g) {
  const uint s0 = wdata[(blk >> 2) + 1u], s1 = wdata[(blk >> 2) + 2u], s2 = wdata[(blk >> 2) + 3u];
  const uint lo = g < 4u ? s0 : s1, hi = g < 4u ? s1 : s2, sh = (g % 4u) * 8u;
  const uint b_g = (lo >> sh) & 0xFFu, b_g4 = (hi >> sh) & 0xFFu, b_gm4 = (s0 >> sh) & 0xFFu;
  return g < 4u ? uvec2(b_g & 63u, b_g4 & 63u)
                : uvec2((b_g4 & 0xFu) | ((b_gm4 >> 6) << 4), (b_g4 >> 4) | ((b_g >> 6) << 4));
}
#endif

// Four consecutive weights starting at element i (i % 4 == 0).
#if defined(W_F32)
layout(std430, binding = 0) readonly buffer W4 { vec4 w4[]; };
vec4 w_load4(uint i) { return w4[i >> 2]; }
#elif defined(W_F16)
layout(std430, binding = 0) readonly buffer W2 { uvec2 w2[]; };
vec4 w_load4(uint i) {
  const uvec2 v = w2[i >> 2];
  return vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
}
#elif defined(W_BF16)
layout(std430, binding = 0) readonly buffer W2 { uvec2 w2[]; };
vec4 w_load4(uint i) {
  const uvec2 v = w2[i >> 2];
  return vec4(uintBitsToFloat(v.x << 16), uintBitsToFloat(v.x & 0xFFFF0000u), uintBitsToFloat(v.y << 16),
              uintBitsToFloat(v.y & 0xFFFF0000u));
}
#elif defined(W_Q8_0)
vec4 w_load4(uint i) {
  const uint blk = (i / 32u) * 34u, o = blk + 2u + i % 32u;  // o is even
  const uint q = bytes4(o);
  const ivec4 b = ivec4(int(q << 24) >> 24, int(q << 16) >> 24, int(q << 8) >> 24, int(q) >> 24);
  return vec4(b) * w_half(blk);
}
#elif defined(W_Q4_K)
// The four values share a 32-value sub-block (one scale and min) and sit in four consecutive,
// word-aligned bytes of qs, all low or all high nibbles: 5 loads instead of ~24.
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 144u, j = i % 256u, g = j / 32u;
  const vec2 dm = unpackHalf2x16(wdata[blk >> 2]);  // d, dmin
  const uvec2 sm = k_scale_min_words(blk, g);
  const uint sc = sm.x, mn = sm.y;
  const uint q = wdata[(blk + 16u + (j / 64u) * 32u + j % 32u) >> 2] >> (((j % 64u) / 32u) * 4u);
  const vec4 v = vec4(q & 0xFu, (q >> 8) & 0xFu, (q >> 16) & 0xFu, (q >> 24) & 0xFu);
  return v * (dm.x * float(sc)) - dm.y * float(mn);
}
#elif defined(W_Q4_0)
// Four consecutive qs bytes (one nibble each) and the block's scale: 3 loads instead of ~12.
vec4 w_load4(uint i) {
  const uint blk = (i / 32u) * 18u, j = i % 32u;
  const uint q = bytes4(blk + 2u + j % 16u) >> ((j / 16u) * 4u);
  const vec4 v = vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFu) - 8.0;
  return v * w_half(blk);
}
#elif defined(W_Q6_K)
// The four values share a scale; their low bits are four consecutive ql bytes (one nibble)
// and their high bits four consecutive qh bytes (one 2-bit field): 6 loads instead of ~20.
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 210u, j = i % 256u;
  const uint n = j / 128u, r = j % 128u, quarter = r / 32u, l = r % 32u;
  const uint ql = bytes4(blk + n * 64u + l + (quarter & 1u) * 32u) >> ((quarter >> 1) * 4u);
  const uint qh = bytes4(blk + 128u + n * 32u + l) >> (2u * quarter);
  const uvec4 lo = uvec4(ql, ql >> 8, ql >> 16, ql >> 24) & 0xFu;
  const uvec4 hi = uvec4(qh, qh >> 8, qh >> 16, qh >> 24) & 3u;
  const vec4 q = vec4(ivec4(lo | (hi << 4)) - 32);
  return q * (w_half(blk + 208u) * float(w_i8(blk + 192u + n * 8u + l / 16u + 2u * quarter)));
}
#elif defined(W_Q4_1)
// Four consecutive qs bytes (word-aligned: blocks are 20 bytes) and the block's d and m.
vec4 w_load4(uint i) {
  const uint blk = (i / 32u) * 20u, j = i % 32u;
  const uint q = wdata[(blk + 4u + j % 16u) >> 2] >> ((j / 16u) * 4u);
  const vec2 dm = unpackHalf2x16(wdata[blk >> 2]);
  return vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFu) * dm.x + dm.y;
}
#elif defined(W_Q5_0) || defined(W_Q5_1)
// Four consecutive qs bytes (one nibble each), their four qh bits and the block's scale(s).
vec4 w_load4(uint i) {
#if defined(W_Q5_0)
  const uint blk = (i / 32u) * 22u, qh_at = blk + 2u;
#else
  const uint blk = (i / 32u) * 24u, qh_at = blk + 4u;
#endif
  const uint j = i % 32u;
  const uint q = ((bytes4(qh_at + 4u + j % 16u) >> ((j / 16u) * 4u)) & 0x0F0F0F0Fu) | (spread4(bytes4(qh_at) >> j) << 4);
  const vec4 v = vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFFu);
#if defined(W_Q5_0)
  return (v - 16.0) * w_half(blk);
#else
  const vec2 dm = unpackHalf2x16(wdata[blk >> 2]);
  return v * dm.x + dm.y;
#endif
}
#elif defined(W_IQ4_NL)
vec4 w_load4(uint i) {
  const uint blk = (i / 32u) * 18u, j = i % 32u;
  const uint q = bytes4(blk + 2u + j % 16u) >> ((j / 16u) * 4u);
  return iq4nl4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFu) * w_half(blk);
}
#elif defined(W_IQ4_XS)
// The four values share a sub-block (one 6-bit scale); their indices are four consecutive,
// word-aligned qs bytes (blocks are 136 bytes).
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 136u, j = i % 256u, s = j / 32u, t = j % 32u;
  const uint h = wdata[blk >> 2];  // d, scales_h
  const uint ls = ((wdata[(blk >> 2) + 1u] >> (4u * s)) & 0xFu) | (((h >> (16u + 2u * s)) & 3u) << 4);
  const uint q = wdata[(blk + 8u + 16u * s + t % 16u) >> 2] >> ((t / 16u) * 4u);
  return iq4nl4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFu) * (unpackHalf2x16(h).x * float(int(ls) - 32));
}
#elif defined(W_Q2_K)
// The four values share a 16-value sub-block (one scale byte); their 2-bit fields sit at the
// same shift in four consecutive, word-aligned qs bytes (blocks are 84 bytes).
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 84u, j = i % 256u;
  const uint q = wdata[(blk + 16u + (j / 128u) * 32u + j % 32u) >> 2] >> (2u * ((j % 128u) / 32u));
  const uint sc = (wdata[(blk + j / 16u) >> 2] >> (8u * ((j / 16u) % 4u))) & 0xFFu;
  const vec2 dm = unpackHalf2x16(wdata[(blk + 80u) >> 2]);
  return vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 3u) * (dm.x * float(sc & 0xFu)) - dm.y * float(sc >> 4);
}
#elif defined(W_Q3_K)
// As Q2_K, plus the high bits from four consecutive hmask bytes and the 6-bit scale.
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 110u, j = i % 256u, s = j / 16u;
  const uint lo = (bytes4(blk + 32u + (j / 128u) * 32u + j % 32u) >> (2u * ((j % 128u) / 32u))) & 0x03030303u;
  const uint hi = (bytes4(blk + j % 32u) >> (j / 32u)) & 0x01010101u;
  const uint q = lo | (hi << 2);
  const uint sl = bytes4(blk + 96u + 4u * (s % 8u / 4u)), sh = bytes4(blk + 104u);
  const uint sc = ((sl >> (8u * (s % 4u) + 4u * (s / 8u))) & 0xFu) | (((sh >> (8u * (s % 4u) + 2u * (s / 4u))) & 3u) << 4);
  return (vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFFu) - 4.0) * (w_half(blk + 108u) * float(int(sc) - 32));
}
#elif defined(W_Q5_K)
// Q4_K's decoder (the same 16-byte head), plus four consecutive, word-aligned qh bytes.
vec4 w_load4(uint i) {
  const uint blk = (i / 256u) * 176u, j = i % 256u, g = j / 32u;
  const vec2 dm = unpackHalf2x16(wdata[blk >> 2]);  // d, dmin
  const uvec2 sm = k_scale_min_words(blk, g);
  const uint sc = sm.x, mn = sm.y;
  const uint ql = (wdata[(blk + 48u + (j / 64u) * 32u + j % 32u) >> 2] >> (((j % 64u) / 32u) * 4u)) & 0x0F0F0F0Fu;
  const uint qh = (wdata[(blk + 16u + j % 32u) >> 2] >> g) & 0x01010101u;
  const uint q = ql | (qh << 4);
  return vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 0xFFu) * (dm.x * float(sc)) - dm.y * float(mn);
}
#else
vec4 w_load4(uint i) { return vec4(w_load(i), w_load(i + 1u), w_load(i + 2u), w_load(i + 3u)); }
#endif

void main() {
  const uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
  const uint m0 = gl_WorkGroupID.y * TM;
  const uint K4 = pc.K / 4u;
  // Rows and columns past the end read the last one: in bounds, never written.
  uint xb[TM], wb[TN];
  [[unroll]] for (uint i = 0; i < TM; ++i) xb[i] = min(m0 + i, pc.M - 1u) * K4;
  [[unroll]] for (uint j = 0; j < TN; ++j) wb[j] = min(n0 + j, pc.N - 1u) * pc.K;
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  for (uint k4 = 0; k4 < K4; ++k4) {
    vec4 a[TM], b[TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) a[i] = x4[xb[i] + k4];
    [[unroll]] for (uint j = 0; j < TN; ++j) b[j] = w_load4(wb[j] + 4u * k4);
    [[unroll]] for (uint i = 0; i < TM; ++i)
      [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] += dot(a[i], b[j]);
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    if (m0 + i >= pc.M) break;
    [[unroll]] for (uint j = 0; j < TN; ++j)
      if (n0 + j < pc.N) y[(m0 + i) * pc.ldy + n0 + j] = acc[i][j];
  }
}
