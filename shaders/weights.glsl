// Weight access by storage type, chosen by one #define per variant (W_F32, W_F16, W_BF16,
// W_Q8_0, W_Q4_0, W_Q4_1, W_Q5_0, W_Q5_1, W_IQ4_NL, W_Q2_K, W_Q3_K, W_Q4_K, W_Q5_K, W_Q6_K,
// W_IQ4_XS): weights stay on the device in their stored (ggml) form and are converted in registers. Binding 0 is always the weight matrix [rows, K], row-major.
// Block layouts are ggml's; w_load(i) returns element i of the flattened matrix.
#if defined(W_F32)
layout(std430, binding = 0) readonly buffer Wt { float wdata[]; };
float w_load(uint i) { return wdata[i]; }
#else
// Everything else is read as 32-bit words (no 8/16-bit storage feature needed); buffers are
// padded to a multiple of 4 bytes by the host.
layout(std430, binding = 0) readonly buffer Wt { uint wdata[]; };
uint w_byte(uint b) { return (wdata[b >> 2] >> ((b & 3u) * 8u)) & 0xFFu; }
uint w_u16(uint b) { return (wdata[b >> 2] >> ((b & 2u) * 8u)) & 0xFFFFu; }  // b is even
float w_half(uint b) { return unpackHalf2x16(w_u16(b)).x; }
int w_i8(uint b) { return int(w_byte(b) << 24) >> 24; }

#if defined(W_Q4_K) || defined(W_Q5_K)
// The 6-bit scale and min of sub-block g (0..7) of the Q4_K/Q5_K block at byte b (its 12-byte
// scales follow d and dmin).
uvec2 k_scale_min(uint b, uint g) {
  if (g < 4u) return uvec2(w_byte(b + 4u + g) & 63u, w_byte(b + 8u + g) & 63u);
  return uvec2((w_byte(b + 8u + g) & 0xFu) | ((w_byte(b + g) >> 6) << 4),
               (w_byte(b + 8u + g) >> 4) | ((w_byte(b + 4u + g) >> 6) << 4));
}
#endif

#if defined(W_F16)
float w_load(uint i) { return unpackHalf2x16(wdata[i >> 1])[i & 1u]; }
#elif defined(W_BF16)
float w_load(uint i) { return uintBitsToFloat(w_u16(2u * i) << 16); }
#elif defined(W_Q8_0)
// block: f16 d, int8 qs[32]  (34 bytes)
float w_load(uint i) {
  const uint b = (i / 32u) * 34u;
  return w_half(b) * float(w_i8(b + 2u + i % 32u));
}
#elif defined(W_Q4_0)
// block: f16 d, uint8 qs[16]; element j < 16 is the low nibble of qs[j], j >= 16 the high nibble of qs[j-16]
float w_load(uint i) {
  const uint b = (i / 32u) * 18u, j = i % 32u;
  const uint q = (w_byte(b + 2u + (j & 15u)) >> ((j >> 4) * 4u)) & 0xFu;
  return w_half(b) * (float(q) - 8.0);
}
#elif defined(W_Q4_K)
// block: f16 d, f16 dmin, uint8 scales[12] (8 6-bit scale/min pairs), uint8 qs[128]  (144 bytes)
float w_load(uint i) {
  const uint b = (i / 256u) * 144u, j = i % 256u;
  const uint g = j / 32u;  // sub-block of 32 elements
  const uvec2 sm = k_scale_min(b, g);
  const uint sc = sm.x, mn = sm.y;
  const uint within = j % 64u;
  const uint q = (w_byte(b + 16u + (j / 64u) * 32u + within % 32u) >> ((within / 32u) * 4u)) & 0xFu;
  return w_half(b) * float(sc) * float(q) - w_half(b + 2u) * float(mn);
}
#elif defined(W_Q6_K)
// block: uint8 ql[128], uint8 qh[64], int8 scales[16], f16 d  (210 bytes)
float w_load(uint i) {
  const uint b = (i / 256u) * 210u, j = i % 256u;
  const uint n = j / 128u, r = j % 128u, quarter = r / 32u, l = r % 32u;
  const uint ql = (w_byte(b + n * 64u + l + (quarter & 1u) * 32u) >> ((quarter >> 1) * 4u)) & 0xFu;
  const uint qh = (w_byte(b + 128u + n * 32u + l) >> (2u * quarter)) & 3u;
  const int q = int(ql | (qh << 4)) - 32;
  const float sc = float(w_i8(b + 192u + n * 8u + l / 16u + 2u * quarter));
  return w_half(b + 208u) * sc * float(q);
}
#elif defined(W_Q4_1)
// block: f16 d, f16 m, uint8 qs[16]  (20 bytes); nibbles as in Q4_0, x = d * q + m
float w_load(uint i) {
  const uint b = (i / 32u) * 20u, j = i % 32u;
  const uint q = (w_byte(b + 4u + (j & 15u)) >> ((j >> 4) * 4u)) & 0xFu;
  const vec2 dm = unpackHalf2x16(wdata[b >> 2]);
  return float(q) * dm.x + dm.y;
}
#elif defined(W_Q5_0) || defined(W_Q5_1)
// Q5_0 block: f16 d, uint32 qh, uint8 qs[16]  (22 bytes), x = d * (q - 16);
// Q5_1 block: f16 d, f16 m, uint32 qh, uint8 qs[16]  (24 bytes), x = d * q + m.
// Nibbles as in Q4_0; bit 4 of element j is bit j of qh.
#if defined(W_Q5_0)
const uint Q5_BYTES = 22u, Q5_QH = 2u;
#else
const uint Q5_BYTES = 24u, Q5_QH = 4u;
#endif
float w_load(uint i) {
  const uint b = (i / 32u) * Q5_BYTES, j = i % 32u;
  const uint lo = (w_byte(b + Q5_QH + 4u + (j & 15u)) >> ((j >> 4) * 4u)) & 0xFu;
  const uint hi = (w_byte(b + Q5_QH + j / 8u) >> (j % 8u)) & 1u;
  const float q = float(lo | (hi << 4));
#if defined(W_Q5_0)
  return w_half(b) * (q - 16.0);
#else
  return w_half(b) * q + w_half(b + 2u);
#endif
}
#elif defined(W_IQ4_NL) || defined(W_IQ4_XS)
#include "grids.glsl"
float iq4nl(uint q) { return iq4nl4(uvec4(q)).x; }
#if defined(W_IQ4_NL)
// block: f16 d, uint8 qs[16]  (18 bytes), nibbles as in Q4_0: x = d * kvalues[q]
float w_load(uint i) {
  const uint b = (i / 32u) * 18u, j = i % 32u;
  const uint q = (w_byte(b + 2u + (j & 15u)) >> ((j >> 4) * 4u)) & 0xFu;
  return w_half(b) * iq4nl(q);
}
#else
// block: f16 d, uint16 scales_h, uint8 scales_l[4], uint8 qs[128]  (136 bytes). Sub-block s
// (32 elements) has the 6-bit scale ls = nibble s%2 of scales_l[s/2] | bits 2s.. of scales_h << 4
// and its qs in bytes 16s.., as in IQ4_NL: x = d * (ls - 32) * kvalues[q]
float w_load(uint i) {
  const uint b = (i / 256u) * 136u, j = i % 256u, s = j / 32u, t = j % 32u;
  const uint ls = ((w_byte(b + 4u + s / 2u) >> (4u * (s % 2u))) & 0xFu) | (((w_u16(b + 2u) >> (2u * s)) & 3u) << 4);
  const uint q = (w_byte(b + 8u + 16u * s + (t & 15u)) >> ((t >> 4) * 4u)) & 0xFu;
  return w_half(b) * float(int(ls) - 32) * iq4nl(q);
}
#endif
#elif defined(W_Q2_K)
// block: uint8 scales[16], uint8 qs[64], f16 d, f16 dmin  (84 bytes). Element 128n + 32k + l
// (l < 32) is bits 2k.. of qs[32n + l]; scale byte j/16: x = d * (sc & 15) * q - dmin * (sc >> 4)
float w_load(uint i) {
  const uint b = (i / 256u) * 84u, j = i % 256u;
  const uint q = (w_byte(b + 16u + (j / 128u) * 32u + j % 32u) >> (2u * ((j % 128u) / 32u))) & 3u;
  const uint sc = w_byte(b + j / 16u);
  const vec2 dm = unpackHalf2x16(wdata[(b + 80u) >> 2]);
  return dm.x * float(sc & 0xFu) * float(q) - dm.y * float(sc >> 4);
}
#elif defined(W_Q3_K)
// block: uint8 hmask[32], uint8 qs[64], uint8 scales[12], f16 d  (110 bytes). Low 2 bits of q as
// in Q2_K, bit 2 is bit j/32 of hmask[j%32]; 6-bit scale s = j/16: low 4 bits at scales[s%8] >>
// 4*(s/8), high 2 at scales[8 + s%4] >> 2*(s/4). x = d * (sc - 32) * (q - 4)
float w_load(uint i) {
  const uint b = (i / 256u) * 110u, j = i % 256u, s = j / 16u;
  const uint lo = (w_byte(b + 32u + (j / 128u) * 32u + j % 32u) >> (2u * ((j % 128u) / 32u))) & 3u;
  const uint hi = (w_byte(b + j % 32u) >> (j / 32u)) & 1u;
  const uint sc = ((w_byte(b + 96u + s % 8u) >> (4u * (s / 8u))) & 0xFu) |
                  (((w_byte(b + 104u + s % 4u) >> (2u * (s / 4u))) & 3u) << 4);
  return w_half(b + 108u) * float(int(sc) - 32) * float(int(lo | (hi << 2)) - 4);
}
#elif defined(W_Q5_K)
// block: f16 d, f16 dmin, uint8 scales[12], uint8 qh[32], uint8 qs[128]  (176 bytes): Q4_K with
// bit 4 of element j in bit j/32 of qh[j%32]
float w_load(uint i) {
  const uint b = (i / 256u) * 176u, j = i % 256u;
  const uint g = j / 32u;  // sub-block of 32 elements
  const uvec2 sm = k_scale_min(b, g);
  const uint sc = sm.x, mn = sm.y;
  const uint within = j % 64u;
  const uint lo = (w_byte(b + 48u + (j / 64u) * 32u + within % 32u) >> ((within / 32u) * 4u)) & 0xFu;
  const uint hi = (w_byte(b + 16u + j % 32u) >> g) & 1u;
  return w_half(b) * float(sc) * float(lo | (hi << 4)) - w_half(b + 2u) * float(mn);
}
#else
#error "weights.glsl needs a W_<type> define"
#endif
#endif
