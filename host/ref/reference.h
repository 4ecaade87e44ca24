#pragma once
// Scalar C++ references for every kernel: plainly written, double accumulation where it
// matters, the oracle that GPU tests compare against.
#include <cstdint>
#include <vector>

#include "host/gguf/ggml_types.h"

namespace snapvk::ref {

void add(const float* a, const float* b, float* c, size_t n, size_t nb);
void mul(const float* a, const float* b, float* c, size_t n, size_t nb);
void rms_norm(const float* x, const float* w, float* y, size_t rows, size_t n, float eps);
// w: [N, K] stored as `wt` (raw bytes, rows of row_bytes(wt, K)); x: [M, K]; y: [M, N]
void matmul(GgmlType wt, const void* w, const float* x, float* y, size_t M, size_t N, size_t K);

// y[t, :] = dequantized row ids[t] of a table stored as `wt` with rows of n elements
void get_rows(GgmlType wt, const void* table, const int32_t* ids, float* y, size_t rows, size_t n);
// In place on x [T, n_heads, head_dim], row t at position pos0 + t; neox: halves, else adjacent pairs;
// freq_scale: linear scaling of the positions.
void rope(float* x, size_t T, size_t n_heads, size_t head_dim, size_t n_rot, size_t pos0, float base, bool neox,
          const float* factors, float freq_scale = 1.0f);
void swiglu(const float* g, const float* u, float* y, size_t n);
// y = gelu(g) * u, GELU's tanh approximation: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
void geglu(const float* g, const float* u, float* y, size_t n);
// x = cap * tanh(x / cap), in place
void softcap(float* x, size_t n, float cap);
// One query row q[hd] against n keys/values (rows of hd): softmax(q k^T * scale) v.
void attend(const float* q, const float* const* keys, const float* const* values, size_t n, size_t hd, float scale,
            float* out);

}  // namespace snapvk::ref
