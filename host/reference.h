#pragma once
// Scalar C++ references for every kernel: plainly written, double accumulation where it
// matters, the oracle that GPU tests compare against.
#include <cstdint>
#include <vector>

#include "host/ggml_types.h"

namespace snapvk::ref {

void add(const float* a, const float* b, float* c, size_t n, size_t nb);
void mul(const float* a, const float* b, float* c, size_t n, size_t nb);
void rms_norm(const float* x, const float* w, float* y, size_t rows, size_t n, float eps);
void softmax(const float* x, float* y, size_t rows, size_t n, float scale);
// w: [N, K] stored as `wt` (raw bytes, rows of row_bytes(wt, K)); x: [M, K]; y: [M, N]
void matmul(GgmlType wt, const void* w, const float* x, float* y, size_t M, size_t N, size_t K);

}  // namespace snapvk::ref
