#pragma once
// Scalar references of the KV-cache storage types (shaders/kv_format.h): what kv_store.comp
// writes for a row, what kv.glsl reads back from it, and hadamard.comp's rotation. The encoder
// repeats the shader source's float32 arithmetic operation for operation (llvmpipe stores the
// same words); a device whose division or square root is looser (GLSL allows 2.5 ulp, and
// glslc -O turns x / 127.0 into x * (1 / 127.0)) moves a code only where a value sits on a
// rounding boundary, and with it a refitted scale (iq4_nl, hq4, hq3) by a few percent.
#include <cstdint>
#include <vector>

#include "host/kernels/attention.h"

namespace snapvk::ref {

// Rows of head_dim values to and from the kv_row_words(t, head_dim) words of a cache row.
void kv_encode_row(KvType t, const float* x, uint32_t head_dim, uint32_t* words);
void kv_decode_row(KvType t, const uint32_t* words, uint32_t head_dim, float* out);

// What a block type's row stores, unpacked: per value its code (q8_0: the int8; else the index
// into its grid, the fifth or third bit included), per 32-value block its f16 scale and its
// offset (q4_1, q5_1; 0 for the others). Tests compare rows field by field with it.
struct KvRowFields {
  std::vector<int32_t> q;
  std::vector<uint16_t> d, m;
};
KvRowFields kv_row_fields(KvType t, const uint32_t* words, uint32_t head_dim);
// A code's rank among its type's grid values in ascending order: codes one step apart on the
// grid differ by 1 in rank (hq4 and hq3 store a sign above a magnitude).
int32_t kv_code_rank(KvType t, int32_t q);

// One head's vector in place by the rotated types' transform (y = H S x / sqrt(N) per aligned
// block of N values, N the largest power of two dividing head_dim), or by its inverse. In double,
// then rounded once: the GPU's float butterflies differ from it by a few ulp of the block's norm.
void kv_rotate(float* x, uint32_t head_dim, bool inverse);

}  // namespace snapvk::ref
