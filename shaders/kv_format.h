// KV-cache storage types, shared by host C++ and GLSL: plain #defines only, so both languages
// include it. The host's KvType (host/kernels/attention.h) takes these values; a kernel variant
// is built per type with KV_K (and KV_V) set to one of them. The row layouts are in kv.glsl and
// kv_row_words() (host/kernels/attention.cpp); ref::kv_encode_row / kv_decode_row
// (host/ref/kv_format_ref.h) are their CPU references.
#ifndef SNAPVK_KV_FORMAT_H
#define SNAPVK_KV_FORMAT_H

#define SNAPVK_KV_F32 0
#define SNAPVK_KV_F16 1
#define SNAPVK_KV_Q8_0 2
#define SNAPVK_KV_BF16 3
#define SNAPVK_KV_Q4_0 4
#define SNAPVK_KV_Q4_1 5
#define SNAPVK_KV_IQ4_NL 6
#define SNAPVK_KV_Q5_0 7
#define SNAPVK_KV_Q5_1 8
#define SNAPVK_KV_HQ4 9   // rotated (randomised Walsh-Hadamard), 4-bit Gaussian grid, 4.5 bits per value
#define SNAPVK_KV_HQ3 10  // rotated, 3-bit Gaussian grid, 3.5 bits per value
#define SNAPVK_KV_TYPES 11

// The rotated types' grids: Lloyd-Max levels for a unit Gaussian (4 bits: +-0.128 .. +-2.733;
// 3 bits: +-0.245 .. +-2.152) scaled so the largest is 127, as int8 magnitudes packed in
// words, least significant byte first. A code is a sign bit above a magnitude index.
#define SNAPVK_HQ4_MAG_LO 0x2C1F1206u  // 6, 18, 31, 44
#define SNAPVK_HQ4_MAG_HI 0x7F604B3Au  // 58, 75, 96, 127
#define SNAPVK_HQ3_MAG 0x7F4F2D0Eu     // 14, 45, 79, 127
#define SNAPVK_HQ4_SIGMA 46.5f         // the grid's unit: a Gaussian's standard deviation
#define SNAPVK_HQ3_SIGMA 59.0f

// The rotation's sign flip of coordinate i < 256 of a head's vector (0 or 1): the parity of
// i0 i1 + i2 i3 + i4 i5 + i6 i7 over i's bits, a bent function, as far from every row of the
// Walsh-Hadamard matrix as a sign pattern can be (for N = 16, 64, 256; nearly so for 32 and 128).
// A pattern close to a row would put what all channels share (a common offset) back into one
// coordinate; a multiplicative hash tried first matched rows of H at N = 8 and 16. The same in
// C++ (uint32_t i) and GLSL (uint i).
#define SNAPVK_KV_ROT_PAIRS(i) ((i) & ((i) >> 1) & 0x55u)
#define SNAPVK_KV_ROT_SIGN(i) \
  ((0x6996u >> ((SNAPVK_KV_ROT_PAIRS(i) & 5u) | ((SNAPVK_KV_ROT_PAIRS(i) >> 3) & 0xAu))) & 1u)

#endif
