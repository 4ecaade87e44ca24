#version 450
// y[r] = dot(W[r, :], x): the decode-time projection, NUM_ROWS rows per workgroup. W is
// row-major in its stored (ggml) form; x and y are f32.
//
// Each row is split into "units" of a few elements with one scale each (4..16 for f32/f16/
// bf16, a Q8_0/Q4_0 block, 32 or 64 elements of a K-quant block). Invocation t takes units t,
// t + WG, ...: for each unit it loads its slice of x once, then decodes the unit in every row
// of the workgroup, so x is reused from registers; constant offsets (-8 in Q4_0, -32 in Q6_K,
// the K-quant minimums) are folded into per-unit sums of x, shared by the rows. Each row is
// then reduced with subgroupAdd, through shared memory only with several subgroups.
//
// Neighbouring invocations read neighbouring units: coalesced on GPUs, and on lavapipe too,
// where a load is a loop over the SIMD lanes and lanes reading adjacent bytes are about twice
// as fast as lanes reading far apart. On lavapipe each lane of that loop checks bounds per
// *component*, so the cost follows the number of components loaded: with MATVEC_INT64 (the
// _i64 variants, chosen for CPU devices with shaderInt64) every load uses 64-bit components,
// half as many for the same bytes. Formats aligned to 16 bytes (f32, f16, bf16, Q4_K, Q5_K) are
// read in 16/32-byte loads, those aligned to 8 (Q5_1, IQ4_XS) in whole words; the others (Q8_0,
// Q4_0, Q4_1, Q5_0, IQ4_NL, Q2_K, Q3_K, Q6_K: 34/18/20/22/18/84/110/210 bytes) are read as the
// words covering them, shifted into place.
#include "common.glsl"
#include "weights.glsl"
#if defined(MATVEC_INT64)
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NUM_ROWS = 2;       // rows per workgroup
layout(constant_id = 2) const bool ONE_SUBGROUP = false;  // the workgroup is a single subgroup
// What the projection does around the product (fused ops, one pipeline each; docs/architecture.md,
// "The decode step"): NORM_X takes x as rmsnorm(x) * g (g: binding 3) -- the norm's scale is
// the same for every row, so it is applied to the dot product, and each workgroup sums x^2 from
// the very loads of x the product makes; ADD_Y adds the product to y (the residual stream); GLU
// pairs row r with row N + r of a [2N, K] stack of gate and up matrices and writes
// act(gate x) * (up x), act SiLU (1) or GELU (2).
layout(constant_id = 3) const bool NORM_X = false;
layout(constant_id = 4) const bool ADD_Y = false;
layout(constant_id = 5) const uint GLU = 0;
layout(std430, binding = 1) readonly restrict buffer X { float x[]; };
layout(std430, binding = 1) readonly restrict buffer X4 { vec4 x4[]; };
layout(std430, binding = 2) restrict buffer Y { float y[]; };
layout(std430, binding = 3) readonly restrict buffer G { float g[]; };
layout(std430, binding = 3) readonly restrict buffer G4 { vec4 g4[]; };
layout(push_constant) uniform PC { uint K; uint N; float eps; } pc;  // N: outputs (GLU: rows of each half)
#include "act.glsl"

// ---- loads: weights.glsl declares binding 0 as 32-bit words (wdata); these are wider views ----
#if defined(MATVEC_INT64)
const uint WIDE = 2;  // f32/f16/bf16 units are 32 bytes
layout(std430, binding = 0) readonly restrict buffer Wt8 { uint64_t wdata8[]; };
layout(std430, binding = 0) readonly restrict buffer Wt16 { u64vec2 wdata16[]; };
layout(std430, binding = 0) readonly restrict buffer Wt32 { u64vec4 wdata32[]; };
layout(std430, binding = 1) readonly restrict buffer X32 { u64vec4 x32[]; };
layout(std430, binding = 3) readonly restrict buffer G32 { u64vec4 g32[]; };
uvec4 w_chunk16(uint i) {  // bytes 16i .. 16i+15 of the weights
  const u64vec2 v = wdata16[i];
  return uvec4(unpack32(v.x), unpack32(v.y));
}
void w_chunk32(uint i, out uvec4 a, out uvec4 b) {  // bytes 32i .. 32i+31
  const u64vec4 v = wdata32[i];
  a = uvec4(unpack32(v.x), unpack32(v.y));
  b = uvec4(unpack32(v.z), unpack32(v.w));
}
void x_raw8(uint i, out vec4 a, out vec4 b) {  // x[8i .. 8i+7]
  const u64vec4 v = x32[i];
  a = uintBitsToFloat(uvec4(unpack32(v.x), unpack32(v.y)));
  b = uintBitsToFloat(uvec4(unpack32(v.z), unpack32(v.w)));
}
void g_raw8(uint i, out vec4 a, out vec4 b) {  // g[8i .. 8i+7]
  const u64vec4 v = g32[i];
  a = uintBitsToFloat(uvec4(unpack32(v.x), unpack32(v.y)));
  b = uintBitsToFloat(uvec4(unpack32(v.z), unpack32(v.w)));
}
#else
const uint WIDE = 1;  // f32/f16/bf16 units are 16 bytes
layout(std430, binding = 0) readonly restrict buffer Wt16 { uvec4 wdata16[]; };
uvec4 w_chunk16(uint i) { return wdata16[i]; }
void x_raw8(uint i, out vec4 a, out vec4 b) {
  a = x4[2 * i];
  b = x4[2 * i + 1];
}
void g_raw8(uint i, out vec4 a, out vec4 b) {
  a = g4[2 * i];
  b = g4[2 * i + 1];
}
#endif

// Every element of x is loaded once per workgroup, through these: with NORM_X they also sum x^2
// and scale x by the norm's weights.
float ss = 0.0;  // this invocation's sum of x^2 (NORM_X)
void x_load8(uint i, out vec4 a, out vec4 b) {
  x_raw8(i, a, b);
  if (NORM_X) {
    vec4 ga, gb;
    g_raw8(i, ga, gb);
    ss += dot(a, a) + dot(b, b);
    a *= ga;
    b *= gb;
  }
}
vec4 x_load4(uint i) {  // x[4i .. 4i+3]
  vec4 a = x4[i];
  if (NORM_X) {
    ss += dot(a, a);
    a *= g4[i];
  }
  return a;
}
float x_at(uint i) {
  const float a = x[i];
  if (NORM_X) ss += a * a;
  return NORM_X ? a * g[i] : a;
}

// x[16i .. 16i+15]
void x_load16(uint i, out vec4 v[4]) {
  x_load8(2 * i, v[0], v[1]);
  x_load8(2 * i + 1, v[2], v[3]);
}

#if !defined(W_F32)
// s[0 .. (nb+3)/4-1] = bytes o .. o+nb-1 of the weights as 32-bit words (o and nb even; bytes
// past nb in the last word are junk): the words covering them, shifted by the misalignment.
// Nothing is read outside the run's own words, except that with MATVEC_INT64 64-bit words may
// reach up to `after` bytes past it (bytes the caller knows to exist); all without branches,
// since lavapipe runs both sides of an if. Every load stays within the binding.
#if defined(MATVEC_INT64)
// Bits sh.. of the 128-bit pair (a, b), sh even and < 64; b's part is shifted in two halves so
// that sh == 0 needs no select.
uint64_t funnel64(uint64_t a, uint64_t b, uint sh) { return (a >> sh) | ((b << (32u - sh / 2u)) << (32u - sh / 2u)); }
// 64-bit words 0..n64-1 of [o & ~7, ...) are read as such: those end at most at byte o+nb+after.
// The rest of the M words that can hold run bytes come from two 32-bit loads each, clamped to
// the run's last word (a clamped word is one the run does not need).
#define READ_BYTES(o, nb, s, after)                                                          \
  {                                                                                          \
    const uint M_ = ((nb) + 13) / 8, n64_ = min(M_, ((nb) + (after)) / 8);                   \
    const uint b_ = (o) >> 3, sh_ = ((o) & 7u) * 8u, last_ = ((o) + (nb) - 1u) >> 2;         \
    uint64_t w_[((nb) + 13) / 8];                                                            \
    [[unroll]] for (uint j_ = 0; j_ < M_; ++j_) {                                            \
      if (j_ < n64_) {                                                                       \
        w_[j_] = wdata8[b_ + j_];                                                            \
      } else {                                                                               \
        w_[j_] = pack64(uvec2(wdata[min(2u * (b_ + j_), last_)], wdata[min(2u * (b_ + j_) + 1u, last_)])); \
      }                                                                                      \
    }                                                                                        \
    [[unroll]] for (uint j_ = 0; j_ < ((nb) + 7) / 8; ++j_) {                                \
      const uint64_t v_ = j_ + 1 < M_ ? funnel64(w_[j_], w_[j_ + 1], sh_) : w_[j_] >> sh_;   \
      s[2 * j_] = uint(v_);                                                                  \
      if (2 * j_ + 1 < ((nb) + 3) / 4) s[2 * j_ + 1] = uint(v_ >> 32);                       \
    }                                                                                        \
  }
#else
// One load per word holding run bytes; the extra word a half-word shift may need is clamped to
// the run's last word (it is only needed when it is that word).
#define READ_BYTES(o, nb, s, after)                                                          \
  {                                                                                          \
    const uint b_ = (o) >> 2, sh_ = ((o) & 2u) * 8u, last_ = ((o) + (nb) - 1u) >> 2;         \
    uint w_[((nb) + 3) / 4 + 1];                                                             \
    [[unroll]] for (uint j_ = 0; j_ <= ((nb) + 3) / 4; ++j_) w_[j_] = wdata[min(b_ + j_, last_)]; \
    [[unroll]] for (uint j_ = 0; j_ < ((nb) + 3) / 4; ++j_)                                  \
      s[j_] = (w_[j_] >> sh_) | ((w_[j_ + 1] << (16u - sh_ / 2u)) << (16u - sh_ / 2u));      \
  }
#endif

// s[0 .. n-1] = the n 32-bit words from byte o, o a multiple of 8 (n even): whole-word loads.
#if defined(MATVEC_INT64)
#define READ_WORDS(o, n, s)                                                                  \
  {                                                                                          \
    [[unroll]] for (uint j_ = 0; j_ < (n) / 2; ++j_) {                                       \
      const uvec2 v_ = unpack32(wdata8[((o) >> 3) + j_]);                                    \
      s[2 * j_] = v_.x;                                                                      \
      s[2 * j_ + 1] = v_.y;                                                                  \
    }                                                                                        \
  }
#else
#define READ_WORDS(o, n, s) \
  { [[unroll]] for (uint j_ = 0; j_ < (n); ++j_) s[j_] = wdata[((o) >> 2) + j_]; }
#endif

float f16_at(uint o) {  // f16 at a 2-byte-aligned byte offset: one load
  const uint w = wdata[o >> 2];
  return unpackHalf2x16(w >> ((o & 2u) * 8u)).x;
}
#endif

// Four int8 / uint8 / low-nibble / high-nibble values of a word, as floats.
vec4 i8x4(uint w) { return vec4(ivec4(w << 24, w << 16, w << 8, w) >> 24); }
vec4 u8x4(uint w) { return vec4(uvec4(w, w >> 8, w >> 16, w >> 24) & 0xFFu); }
vec4 lo4x4(uint w) { return vec4(uvec4(w, w >> 8, w >> 16, w >> 24) & 0xFu); }
vec4 hi4x4(uint w) { return vec4(uvec4(w >> 4, w >> 12, w >> 20, w >> 28) & 0xFu); }
float hsum(vec4 v) { return (v.x + v.y) + (v.z + v.w); }
uint half_word(uint a, uint b) { return (a >> 16) | (b << 16); }  // bytes 2..5 of the pair a, b
uint spread4(uint b) { return ((b & 0xFu) * 0x00204081u) & 0x01010101u; }  // bits 0..3 of b to bit 0 of bytes 0..3
#if defined(W_IQ4_NL) || defined(W_IQ4_XS)
// The grid values of the low nibbles of a word's four bytes.
vec4 iq4x4(uint w) { return iq4nl4(uvec4(w, w >> 8, w >> 16, w >> 24) & 0xFu); }
#endif

float acc[NUM_ROWS];
uint row_of[NUM_ROWS];  // row of each slot, clamped to N-1 (slots past the end redo the last row)

#if defined(W_F32)
const uint UNIT = 4 * WIDE;
void unit(uint u, uint units) {
  vec4 xa, xb;
#if defined(MATVEC_INT64)
  x_load8(u, xa, xb);
#else
  xa = x_load4(u);
#endif
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
#if defined(MATVEC_INT64)
    uvec4 a, b;
    w_chunk32(row_of[r] * units + u, a, b);
    acc[r] += dot(uintBitsToFloat(a), xa) + dot(uintBitsToFloat(b), xb);
#else
    acc[r] += dot(uintBitsToFloat(w_chunk16(row_of[r] * units + u)), xa);
#endif
  }
}
#elif defined(W_F16) || defined(W_BF16)
const uint UNIT = 8 * WIDE;
vec4 halves4(uint a, uint b) {
#if defined(W_F16)
  return vec4(unpackHalf2x16(a), unpackHalf2x16(b));
#else
  return uintBitsToFloat(uvec4(a << 16, a & 0xFFFF0000u, b << 16, b & 0xFFFF0000u));
#endif
}
void unit(uint u, uint units) {
  vec4 xv[2 * WIDE];
  [[unroll]] for (uint i = 0; i < WIDE; ++i) x_load8(WIDE * u + i, xv[2 * i], xv[2 * i + 1]);
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    uvec4 w[WIDE];
#if defined(MATVEC_INT64)
    w_chunk32(row_of[r] * units + u, w[0], w[1]);
#else
    w[0] = w_chunk16(row_of[r] * units + u);
#endif
    [[unroll]] for (uint i = 0; i < WIDE; ++i)
      acc[r] += dot(halves4(w[i].x, w[i].y), xv[2 * i]) + dot(halves4(w[i].z, w[i].w), xv[2 * i + 1]);
  }
}
#elif defined(W_Q8_0)
const uint UNIT = 32;  // one block: f16 d, int8 qs[32]  (34 bytes)
void unit(uint u, uint units) {
  vec4 xv[8];
  [[unroll]] for (uint j = 0; j < 4; ++j) x_load8(4 * u + j, xv[2 * j], xv[2 * j + 1]);
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    uint s[9];  // the block: d, then qs from byte 2
    READ_BYTES((row_of[r] * units + u) * 34u, 34, s, 0);
    float d = 0.0;
    [[unroll]] for (uint k = 0; k < 8; ++k) d += dot(i8x4(half_word(s[k], s[k + 1])), xv[k]);
    acc[r] += unpackHalf2x16(s[0]).x * d;
  }
}
#elif defined(W_Q4_0)
const uint UNIT = 32;  // one block: f16 d, uint8 qs[16]; byte t holds elements t (low nibble) and t+16 (high)
void unit(uint u, uint units) {
  vec4 xv[8];
  [[unroll]] for (uint j = 0; j < 4; ++j) x_load8(4 * u + j, xv[2 * j], xv[2 * j + 1]);
  const float sx = hsum(xv[0] + xv[1] + xv[2] + xv[3] + xv[4] + xv[5] + xv[6] + xv[7]);
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    uint s[5];  // the block: d, then qs from byte 2
    READ_BYTES((row_of[r] * units + u) * 18u, 18, s, 0);
    float d = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      const uint q = half_word(s[k], s[k + 1]);
      d += dot(lo4x4(q), xv[k]) + dot(hi4x4(q), xv[4 + k]);
    }
    acc[r] += unpackHalf2x16(s[0]).x * (d - 8.0 * sx);
  }
}
#elif defined(W_Q4_K)
// block (144 bytes, so always 16-byte aligned): f16 d, f16 dmin, uint8 scales[12], uint8 qs[128].
// Unit i (0..7) is qs bytes 16i..16i+15: low nibbles are elements 16*(i&1)+t of sub-block
// 2*(i>>1), high nibbles the same positions of sub-block 2*(i>>1)+1.
const uint UNIT = 32;
void unit(uint u, uint units) {
  const uint b = u >> 3, i = u & 7u, c = i >> 1;
  const uint xb = 16u * b + 4u * c + (i & 1u);  // x_load16 index of the low run; the high run is +2
  vec4 xl[4], xh[4];
  x_load16(xb, xl);
  x_load16(xb + 2u, xh);
  const float sl = hsum(xl[0] + xl[1] + xl[2] + xl[3]), sh = hsum(xh[0] + xh[1] + xh[2] + xh[3]);
  const uint nb = units >> 3;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const uint bi = (row_of[r] * nb + b) * 9u;
    const uvec4 hd = w_chunk16(bi);
    const uvec4 q = w_chunk16(bi + 1u + i);
    // 6-bit scales and mins of sub-blocks 2c and 2c+1 (ggml's get_scale_min_k4), a byte each.
    const uint s16 = (c & 1u) * 16u;
    const bool lo = c < 2u;
    const uint sc = mix(((hd.w >> s16) & 0x0F0Fu) | ((hd.y >> (s16 + 2u)) & 0x3030u), (hd.y >> s16) & 0x3F3Fu, lo);
    const uint mn = mix(((hd.w >> (s16 + 4u)) & 0x0F0Fu) | ((hd.z >> (s16 + 2u)) & 0x3030u), (hd.z >> s16) & 0x3F3Fu, lo);
    const vec2 dm = unpackHalf2x16(hd.x);
    float dl = 0.0, dh = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      dl += dot(lo4x4(q[k]), xl[k]);
      dh += dot(hi4x4(q[k]), xh[k]);
    }
    acc[r] += dm.x * (float(sc & 0xFFu) * dl + float(sc >> 8) * dh) - dm.y * (float(mn & 0xFFu) * sl + float(mn >> 8) * sh);
  }
}
#elif defined(W_Q6_K)
// block (210 bytes, 2-byte aligned): uint8 ql[128], uint8 qh[64], int8 scales[16], f16 d.
// Half n (128 elements), quarter q (32), position l: 6-bit value = nibble q>>1 of
// ql[64n + 32(q&1) + l] | bits 2q..2q+1 of qh[32n + l] << 4, minus 32; scale scales[8n + l/16 + 2q].
// Unit i (0..3) of a block: half n = i>>1, positions l = 16*(i&1) .. +15 of its four quarters.
const uint UNIT = 64;
void unit(uint u, uint units) {
  const uint b = u >> 2, i = u & 3u, n = i >> 1, hf = i & 1u;
  vec4 xv[4][4];  // quarter q: x[256b + 128n + 32q + 16hf ..], 16 elements
  [[unroll]] for (uint q = 0; q < 4; ++q) x_load16(16u * b + 8u * n + 2u * q + hf, xv[q]);
  float sx[4];
  [[unroll]] for (uint q = 0; q < 4; ++q) sx[q] = hsum(xv[q][0] + xv[q][1] + xv[q][2] + xv[q][3]);
  const uint nb = units >> 2;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const uint o = (row_of[r] * nb + b) * 210u;
    uint qa[4], qb[4], qh[4], sw[2];
    READ_BYTES(o + 64u * n + 16u * hf, 16, qa, 16);  // (the rest of the block follows each run)
    READ_BYTES(o + 64u * n + 32u + 16u * hf, 16, qb, 16);
    READ_BYTES(o + 128u + 32u * n + 16u * hf, 16, qh, 16);
    READ_BYTES(o + 192u + 8u * n, 8, sw, 2);  // scales[8n .. 8n+7]
    float s = 0.0;
    [[unroll]] for (uint q = 0; q < 4; ++q) {
      float dq = 0.0;
      [[unroll]] for (uint k = 0; k < 4; ++k) {
        const uint lo = (q & 1u) != 0u ? qb[k] : qa[k];
        const uint v = ((lo >> (4u * (q >> 1))) & 0x0F0F0F0Fu) | (((qh[k] >> (2u * q)) << 4) & 0x30303030u);
        dq += dot(u8x4(v), xv[q][k]);
      }
      const uint sb = hf + 2u * q;  // scale byte within the 8 of this half
      s += float(int(sw[sb >> 2] << (24u - 8u * (sb & 3u))) >> 24) * (dq - 32.0 * sx[q]);
    }
    acc[r] += f16_at(o + 208u) * s;
  }
}
#elif defined(W_Q4_1) || defined(W_Q5_0) || defined(W_Q5_1) || defined(W_IQ4_NL)
// One 32-element block per unit, nibbles as in Q4_0: byte t of qs holds elements t (low) and
// t+16 (high). Q4_1 (20 bytes): f16 d, f16 m, qs; x = d*q + m. Q5_0 (22 bytes): f16 d, uint32
// qh, qs; bit 4 of element j is bit j of qh; x = d*(q - 16). Q5_1 (24 bytes): f16 d, f16 m, qh,
// qs; x = d*q + m. IQ4_NL (18 bytes): f16 d, qs; x = d * kvalues[q]. The offsets m and -16 are
// folded into the sum of x.
const uint UNIT = 32;
void unit(uint u, uint units) {
  vec4 xv[8];
  [[unroll]] for (uint j = 0; j < 4; ++j) x_load8(4 * u + j, xv[2 * j], xv[2 * j + 1]);
#if !defined(W_IQ4_NL)
  const float sx = hsum(xv[0] + xv[1] + xv[2] + xv[3] + xv[4] + xv[5] + xv[6] + xv[7]);
#endif
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const uint blk = row_of[r] * units + u;
    uint qs[4], head;  // qs as words; head = the first word (d, and m where there is one)
    uint qh = 0u;
#if defined(W_Q4_1)
    uint s[5];
    READ_BYTES(blk * 20u, 20, s, 0);
    head = s[0];
    [[unroll]] for (uint k = 0; k < 4; ++k) qs[k] = s[k + 1];
#elif defined(W_Q5_0)
    uint s[6];
    READ_BYTES(blk * 22u, 22, s, 0);
    head = s[0];
    qh = half_word(s[0], s[1]);
    [[unroll]] for (uint k = 0; k < 4; ++k) qs[k] = half_word(s[k + 1], s[k + 2]);
#elif defined(W_Q5_1)
    uint s[6];
    READ_WORDS(blk * 24u, 6, s);
    head = s[0];
    qh = s[1];
    [[unroll]] for (uint k = 0; k < 4; ++k) qs[k] = s[k + 2];
#else
    uint s[5];
    READ_BYTES(blk * 18u, 18, s, 0);
    head = s[0];
    [[unroll]] for (uint k = 0; k < 4; ++k) qs[k] = half_word(s[k], s[k + 1]);
#endif
    float d = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
#if defined(W_IQ4_NL)
      d += dot(iq4x4(qs[k]), xv[k]) + dot(iq4x4(qs[k] >> 4), xv[4 + k]);
#elif defined(W_Q4_1)
      d += dot(lo4x4(qs[k]), xv[k]) + dot(hi4x4(qs[k]), xv[4 + k]);
#else
      const uint lo = (qs[k] & 0x0F0F0F0Fu) | (spread4(qh >> (4u * k)) << 4);
      const uint hi = ((qs[k] >> 4) & 0x0F0F0F0Fu) | (spread4(qh >> (16u + 4u * k)) << 4);
      d += dot(u8x4(lo), xv[k]) + dot(u8x4(hi), xv[4 + k]);
#endif
    }
    const vec2 dm = unpackHalf2x16(head);
#if defined(W_Q5_0)
    acc[r] += dm.x * (d - 16.0 * sx);
#elif defined(W_IQ4_NL)
    acc[r] += dm.x * d;
#else
    acc[r] += dm.x * d + dm.y * sx;
#endif
  }
}
#elif defined(W_IQ4_XS)
// block (136 bytes, 8-byte aligned): f16 d, uint16 scales_h, uint8 scales_l[4], uint8 qs[128].
// Unit i (0..7) is sub-block i: qs bytes 16i..16i+15 as in IQ4_NL, 6-bit scale ls = nibble i%2
// of scales_l[i/2] | bits 2i.. of scales_h << 4; x = d * (ls - 32) * kvalues[q].
const uint UNIT = 32;
void unit(uint u, uint units) {
  const uint b = u >> 3, i = u & 7u;
  vec4 xv[8];
  [[unroll]] for (uint j = 0; j < 4; ++j) x_load8(4 * u + j, xv[2 * j], xv[2 * j + 1]);
  const uint nb = units >> 3;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const uint o = (row_of[r] * nb + b) * 136u;
    uint hd[2], q[4];
    READ_WORDS(o, 2, hd);
    READ_WORDS(o + 8u + 16u * i, 4, q);
    const uint ls = ((hd[1] >> (4u * i)) & 0xFu) | (((hd[0] >> (16u + 2u * i)) & 3u) << 4);
    float d = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) d += dot(iq4x4(q[k]), xv[k]) + dot(iq4x4(q[k] >> 4), xv[4 + k]);
    acc[r] += unpackHalf2x16(hd[0]).x * float(int(ls) - 32) * d;
  }
}
#elif defined(W_Q2_K) || defined(W_Q3_K)
// Q2_K block (84 bytes, 4-byte aligned): uint8 scales[16], uint8 qs[64], f16 d, f16 dmin.
// Q3_K block (110 bytes, 2-byte aligned): uint8 hmask[32], uint8 qs[64], uint8 scales[12], f16 d.
// Half n (128 elements), quarter k (32), position p: the 2-bit field k of qs[32n + p] (Q3_K: bit
// 2 from bit 4n+k of hmask[p]); sub-block (16 elements) 8n + 2k + p/16. Unit i (0..3) of a
// block: half n = i>>1, positions p = 16*(i&1) .. +15 of its four quarters (four sub-blocks).
// Q2_K: x = d * (sc & 15) * q - dmin * (sc >> 4); Q3_K: x = d * (sc - 32) * (q - 4), sc 6-bit.
const uint UNIT = 64;
void unit(uint u, uint units) {
  const uint b = u >> 2, i = u & 3u, n = i >> 1, hf = i & 1u;
  vec4 xv[4][4];  // quarter k: x[256b + 128n + 32k + 16hf ..], 16 elements
  [[unroll]] for (uint k = 0; k < 4; ++k) x_load16(16u * b + 8u * n + 2u * k + hf, xv[k]);
  float sx[4];
  [[unroll]] for (uint k = 0; k < 4; ++k) sx[k] = hsum(xv[k][0] + xv[k][1] + xv[k][2] + xv[k][3]);
  const uint nb = units >> 2;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
#if defined(W_Q2_K)
    const uint o = (row_of[r] * nb + b) * 84u;
    uint q[4], sw[2];
    READ_BYTES(o + 16u + 32u * n + 16u * hf, 16, q, 4);  // (d and dmin follow)
    READ_BYTES(o + 8u * n, 8, sw, 8);                     // scales[8n .. 8n+7]
    const vec2 dm = unpackHalf2x16(wdata[(o + 80u) >> 2]);
    float sd = 0.0, sm = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      float dq = 0.0;
      [[unroll]] for (uint t = 0; t < 4; ++t) dq += dot(u8x4((q[t] >> (2u * k)) & 0x03030303u), xv[k][t]);
      const uint sb = 2u * k + hf;  // scale byte within the 8 of this half
      const uint sc = (sw[sb >> 2] >> (8u * (sb & 3u))) & 0xFFu;
      sd += float(sc & 0xFu) * dq;
      sm += float(sc >> 4) * sx[k];
    }
    acc[r] += dm.x * sd - dm.y * sm;
#else
    const uint o = (row_of[r] * nb + b) * 110u;
    uint q[4], hm[4], sw[4];
    READ_BYTES(o + 32u + 32u * n + 16u * hf, 16, q, 14);  // (the rest of the block follows each run)
    READ_BYTES(o + 16u * hf, 16, hm, 16);
    READ_BYTES(o + 96u, 14, sw, 0);  // scales[12], d
    float s = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      float dq = 0.0;
      [[unroll]] for (uint t = 0; t < 4; ++t) {
        const uint v = ((q[t] >> (2u * k)) & 0x03030303u) | (((hm[t] >> (4u * n + k)) & 0x01010101u) << 2);
        dq += dot(u8x4(v), xv[k][t]);
      }
      // 6-bit scale is: low 4 bits at scales[is % 8] >> 4*(is/8), high 2 at scales[8 + is % 4] >> 2*(is/4)
      const uint is = 8u * n + 2u * k + hf;
      const uint lo = (sw[(is % 8u) >> 2] >> (8u * (is % 4u) + 4u * (is / 8u))) & 0xFu;
      const uint hi = (sw[2] >> (8u * (is % 4u) + 2u * (is / 4u))) & 3u;
      s += float(int(lo | (hi << 4)) - 32) * (dq - 4.0 * sx[k]);
    }
    acc[r] += unpackHalf2x16(sw[3]).x * s;
#endif
  }
}
#elif defined(W_Q5_K)
// block (176 bytes, 16-byte aligned): f16 d, f16 dmin, uint8 scales[12], uint8 qh[32],
// uint8 qs[128]: Q4_K's units, with bit 4 of qs byte 16i+t's low nibble in bit 2(i>>1) of
// qh[16(i&1) + t] and of its high nibble in the next bit.
const uint UNIT = 32;
void unit(uint u, uint units) {
  const uint b = u >> 3, i = u & 7u, c = i >> 1;
  const uint xb = 16u * b + 4u * c + (i & 1u);  // x_load16 index of the low run; the high run is +2
  vec4 xl[4], xh[4];
  x_load16(xb, xl);
  x_load16(xb + 2u, xh);
  const float sl = hsum(xl[0] + xl[1] + xl[2] + xl[3]), sh = hsum(xh[0] + xh[1] + xh[2] + xh[3]);
  const uint nb = units >> 3;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const uint bi = (row_of[r] * nb + b) * 11u;
    const uvec4 hd = w_chunk16(bi);
    const uvec4 qh = w_chunk16(bi + 1u + (i & 1u));
    const uvec4 q = w_chunk16(bi + 3u + i);
    const uint s16 = (c & 1u) * 16u;
    const bool lo = c < 2u;
    const uint sc = mix(((hd.w >> s16) & 0x0F0Fu) | ((hd.y >> (s16 + 2u)) & 0x3030u), (hd.y >> s16) & 0x3F3Fu, lo);
    const uint mn = mix(((hd.w >> (s16 + 4u)) & 0x0F0Fu) | ((hd.z >> (s16 + 2u)) & 0x3030u), (hd.z >> s16) & 0x3F3Fu, lo);
    const vec2 dm = unpackHalf2x16(hd.x);
    float dl = 0.0, dh = 0.0;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      const uint vl = (q[k] & 0x0F0F0F0Fu) | (((qh[k] >> (2u * c)) & 0x01010101u) << 4);
      const uint vh = ((q[k] >> 4) & 0x0F0F0F0Fu) | (((qh[k] >> (2u * c + 1u)) & 0x01010101u) << 4);
      dl += dot(u8x4(vl), xl[k]);
      dh += dot(u8x4(vh), xh[k]);
    }
    acc[r] += dm.x * (float(sc & 0xFFu) * dl + float(sc >> 8) * dh) - dm.y * (float(mn & 0xFFu) * sl + float(mn >> 8) * sh);
  }
}
#endif

// K that the units do not tile (f32/f16/bf16 only): element by element.
void element_path() {
  for (uint i = gl_LocalInvocationID.x; i < pc.K; i += gl_WorkGroupSize.x) {
    const float xv = x_at(i);
    [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) acc[r] += w_load(row_of[r] * pc.K + i) * xv;
  }
}

const uint MAX_SUBGROUPS = 64;  // the host keeps workgroups within 64 subgroups
shared float partial[(NUM_ROWS + 1) * MAX_SUBGROUPS];  // per row, then x^2 (NORM_X)
const uint OUT = GLU != 0u ? NUM_ROWS / 2u : NUM_ROWS;  // outputs per workgroup (GLU: slot r + OUT is r's up row)

void main() {
  // Rows are interleaved across workgroups: slot r of workgroup g is row r*groups + g. A CPU
  // thread runs consecutive workgroups, so each slot then streams through memory in order and
  // the hardware prefetchers keep up even with short rows (2-3x at K = 1024 on lavapipe);
  // on GPUs the order makes no difference.
  const uint groups = (pc.N + OUT - 1) / OUT;
  const uint g = flat_workgroup();
  if (g >= groups) return;
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    acc[r] = 0.0;
    row_of[r] = r < OUT ? min(r * groups + g, pc.N - 1) : min((r - OUT) * groups + g, pc.N - 1) + pc.N;
  }
  if (pc.K % UNIT == 0) {
    const uint units = pc.K / UNIT;
    for (uint u = gl_LocalInvocationID.x; u < units; u += gl_WorkGroupSize.x) unit(u, units);
  } else {
    element_path();
  }

  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) acc[r] = subgroupAdd(acc[r]);
  if (NORM_X) ss = subgroupAdd(ss);
  // (ONE_SUBGROUP compiles the barrier away: costly on lavapipe)
  if (!(ONE_SUBGROUP || gl_NumSubgroups == 1)) {
    if (subgroupElect()) {
      [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) partial[r * MAX_SUBGROUPS + gl_SubgroupID] = acc[r];
      if (NORM_X) partial[NUM_ROWS * MAX_SUBGROUPS + gl_SubgroupID] = ss;
    }
    barrier();
    if (gl_LocalInvocationID.x != 0) return;
    [[unroll]] for (uint r = 0; r <= NUM_ROWS; ++r) {
      if (r == NUM_ROWS && !NORM_X) break;
      float s = 0.0;
      for (uint i = 0; i < gl_NumSubgroups; ++i) s += partial[r * MAX_SUBGROUPS + i];
      if (r < NUM_ROWS) acc[r] = s; else ss = s;
    }
  }
  if (gl_LocalInvocationID.x != 0) return;
  const float scale = NORM_X ? inversesqrt(ss / float(pc.K) + pc.eps) : 1.0;
  [[unroll]] for (uint r = 0; r < OUT; ++r) {
    const uint row = r * groups + g;
    if (row >= pc.N) continue;
    float v = acc[r] * scale;
    if (GLU == 1u) v = silu(v) * (acc[r + OUT] * scale);
    if (GLU == 2u) v = gelu_tanh(v) * (acc[r + OUT] * scale);
    if (ADD_Y) v += y[row];
    y[row] = v;
  }
}
