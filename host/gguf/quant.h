#pragma once
// Scalar reference conversions between float and the ggml storage types snapvk supports.
// Block layouts are byte-for-byte ggml's (ggml-common.h) and the dequantizers reproduce ggml's
// dequantize_row_* arithmetic exactly, so GPU kernels can be checked against them bit for bit.
// The quantizers for F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K follow ggml's quantize_row_*_ref (same
// scale search, same float operation order) and today produce the same bytes as ggml
// (tests/test_quant.cpp checks this); those for the other types produce valid blocks of similar
// quality by simpler searches. Callers should only rely on their quality.
#include <cstdint>

#include "host/gguf/ggml_types.h"

namespace snapvk {

constexpr int kQK8_0 = 32;   // elements per Q8_0 block
constexpr int kQK4_0 = 32;   // elements per Q4_0 block
constexpr int kQK4_1 = 32;   // elements per Q4_1 block
constexpr int kQK5_0 = 32;   // elements per Q5_0 block
constexpr int kQK5_1 = 32;   // elements per Q5_1 block
constexpr int kQK4_NL = 32;  // elements per IQ4_NL block
constexpr int kQK_K = 256;   // elements per K-quant (and IQ4_XS) super-block

// The 16 values a 4-bit IQ4_NL / IQ4_XS index selects (ggml's kvalues_iq4nl), before the scale.
constexpr int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// All scales are IEEE half-precision bit patterns.
struct BlockQ8_0 {
  uint16_t d;         // scale
  int8_t qs[kQK8_0];  // x = d * q
};

struct BlockQ4_0 {
  uint16_t d;              // scale
  uint8_t qs[kQK4_0 / 2];  // x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
};

struct BlockQ4_1 {
  uint16_t d;  // scale
  uint16_t m;  // offset: x[j] = d * (qs[j] & 15) + m, x[j+16] = d * (qs[j] >> 4) + m
  uint8_t qs[kQK4_1 / 2];
};

// 5-bit values: the low 4 bits as in Q4_0, bit 4 of element j in bit j of qh.
struct BlockQ5_0 {
  uint16_t d;              // scale: x = d * (q - 16), q in 0..31
  uint8_t qh[4];           // high bits, a little-endian uint32
  uint8_t qs[kQK5_0 / 2];  // low nibbles: element j < 16 in the low nibble of qs[j], j >= 16 the high of qs[j-16]
};

struct BlockQ5_1 {
  uint16_t d;              // scale: x = d * q + m, q in 0..31
  uint16_t m;              // offset
  uint8_t qh[4];           // high bits as in Q5_0
  uint8_t qs[kQK5_1 / 2];  // low nibbles as in Q5_0
};

// Q4_0's layout with a non-linear grid: x[j] = d * kValuesIq4nl[nibble j].
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK4_NL / 2];
};

// 16 sub-blocks of 16 with a 4-bit scale and a 4-bit min each: x = d * sc * q - dmin * m, q in 0..3.
// Element 128n + 32j + l (l < 32) is bits 2j..2j+1 of qs[32n + l]; its scale byte is scales[e / 16].
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // low nibble scale, high nibble min
  uint8_t qs[kQK_K / 4];       // 2-bit quants
  uint16_t d;                  // super-block scale for the scales
  uint16_t dmin;               // super-block scale for the mins
};

// 16 sub-blocks of 16 with 6-bit scales: x = d * (sc - 32) * (q - 4), q in 0..7. The low 2 bits
// of q are placed as in Q2_K; bit 2 of element e is bit e / 32 of hmask[e % 32].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];  // high bits of the quants
  uint8_t qs[kQK_K / 4];     // low 2 bits of the quants
  uint8_t scales[12];        // sc[i]: low 4 bits in scales[i % 8] >> (4 * (i / 8)), high 2 bits in
                             // scales[8 + i % 4] >> (2 * (i / 4))
  uint16_t d;                // super-block scale
};

// Q4_K with a fifth bit: element 64c + 32h + l takes bit 2c + h of qh[l] as bit 4 (q in 0..31).
struct BlockQ5_K {
  uint16_t d;             // super-block scale for the 6-bit scales
  uint16_t dmin;          // super-block scale for the 6-bit mins
  uint8_t scales[12];     // as in Q4_K
  uint8_t qh[kQK_K / 8];  // high bits of the quants
  uint8_t qs[kQK_K / 2];  // low 4 bits, as in Q4_K
};

// 8 sub-blocks of 32, each IQ4_NL-coded with a 6-bit scale: x = d * (ls - 32) * kValuesIq4nl[q].
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;             // bits 2i..2i+1: high 2 bits of ls[i]
  uint8_t scales_l[kQK_K / 64];  // nibble i % 2 of byte i / 2: low 4 bits of ls[i]
  uint8_t qs[kQK_K / 2];         // sub-block i in bytes 16i..16i+15, laid out as in IQ4_NL
};

// 8 sub-blocks of 32 elements, each with a 6-bit scale and a 6-bit min:
// x = d * sc[j] * q - dmin * m[j], q in 0..15.
struct BlockQ4_K {
  uint16_t d;             // super-block scale for the 6-bit scales
  uint16_t dmin;          // super-block scale for the 6-bit mins
  uint8_t scales[12];     // sc[0..7] and m[0..7] packed in 6 bits each (see get_scale_min_k4)
  uint8_t qs[kQK_K / 2];  // 4-bit quants; each 64-element chunk uses 32 bytes, low nibbles first
};

// 16 sub-blocks of 16 elements with signed 8-bit scales: x = d * scales[j] * (q - 32), q in 0..63.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];      // low 4 bits of the quants
  uint8_t qh[kQK_K / 4];      // high 2 bits of the quants
  int8_t scales[kQK_K / 16];  // 8-bit sub-block scales
  uint16_t d;                 // super-block scale
};

static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockIQ4_XS) == 136);

// IEEE half <-> float. fp32_to_fp16 rounds to nearest even; overflow gives inf, NaN stays NaN
// (quiet), subnormals are produced and read exactly.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

// bfloat16 <-> float. fp32_to_bf16 rounds to nearest even like ggml (NaN is kept quiet).
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

// Converts n elements of type `type` at src (packed blocks, any alignment) to floats.
// Throws snapvk::Error if the type is not supported or n is negative or not a multiple of the
// block size.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// Converts n floats to type `type` at dst (row_bytes(type, n) bytes, any alignment).
// Same errors as dequantize_row.
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);

}  // namespace snapvk
