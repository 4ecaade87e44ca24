#pragma once
// Scalar reference conversions between float and the ggml storage types snapvk supports.
// Block layouts are byte-for-byte ggml's (ggml-common.h) and the dequantizers reproduce ggml's
// dequantize_row_* arithmetic exactly, so GPU kernels can be checked against them bit for bit.
// The quantizers follow ggml's quantize_row_*_ref (same scale search, same float operation
// order). Callers should only rely on their quality, but today they produce the same bytes as
// ggml (tests/test_quant.cpp checks this).
#include <cstdint>

#include "host/gguf/ggml_types.h"

namespace snapvk {

constexpr int kQK8_0 = 32;  // elements per Q8_0 block
constexpr int kQK4_0 = 32;  // elements per Q4_0 block
constexpr int kQK_K = 256;  // elements per K-quant super-block

// All scales are IEEE half-precision bit patterns.
struct BlockQ8_0 {
  uint16_t d;          // scale
  int8_t qs[kQK8_0];   // x = d * q
};

struct BlockQ4_0 {
  uint16_t d;              // scale
  uint8_t qs[kQK4_0 / 2];  // x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
};

// 8 sub-blocks of 32 elements, each with a 6-bit scale and a 6-bit min:
// x = d * sc[j] * q - dmin * m[j], q in 0..15.
struct BlockQ4_K {
  uint16_t d;                // super-block scale for the 6-bit scales
  uint16_t dmin;             // super-block scale for the 6-bit mins
  uint8_t scales[12];        // sc[0..7] and m[0..7] packed in 6 bits each (see get_scale_min_k4)
  uint8_t qs[kQK_K / 2];     // 4-bit quants; each 64-element chunk uses 32 bytes, low nibbles first
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
