// Weight access by storage type, chosen by one #define per variant (W_F32, W_F16, W_BF16,
// W_Q8_0, W_Q4_0, W_Q4_K, W_Q6_K): weights stay on the device in their stored (ggml) form and
// are converted in registers. Binding 0 is always the weight matrix [rows, K], row-major.
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
  uint sc, mn;
  if (g < 4u) {
    sc = w_byte(b + 4u + g) & 63u;
    mn = w_byte(b + 8u + g) & 63u;
  } else {
    sc = (w_byte(b + 8u + g) & 0xFu) | ((w_byte(b + g) >> 6) << 4);
    mn = (w_byte(b + 8u + g) >> 4) | ((w_byte(b + 4u + g) >> 6) << 4);
  }
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
#else
#error "weights.glsl needs a W_<type> define"
#endif
#endif
