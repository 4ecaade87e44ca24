#include "host/reference.h"

#include <cmath>
#include <limits>

#include "host/quant.h"

namespace snapvk::ref {

void add(const float* a, const float* b, float* c, size_t n, size_t nb) {
  for (size_t i = 0; i < n; ++i) c[i] = a[i] + b[i % nb];
}

void mul(const float* a, const float* b, float* c, size_t n, size_t nb) {
  for (size_t i = 0; i < n; ++i) c[i] = a[i] * b[i % nb];
}

void rms_norm(const float* x, const float* w, float* y, size_t rows, size_t n, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float scale = float(1.0 / std::sqrt(ss / double(n) + eps));
    for (size_t i = 0; i < n; ++i) y[r * n + i] = xr[i] * scale * w[i];
  }
}

void softmax(const float* x, float* y, size_t rows, size_t n, float scale) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float m = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < n; ++i) m = std::max(m, scale * xr[i]);
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += std::exp(double(scale * xr[i]) - m);
    for (size_t i = 0; i < n; ++i) y[r * n + i] = float(std::exp(double(scale * xr[i]) - m) / s);
  }
}

void matmul(GgmlType wt, const void* w, const float* x, float* y, size_t M, size_t N, size_t K) {
  const uint64_t rb = row_bytes(wt, K);
  std::vector<float> row(K);
  for (size_t n = 0; n < N; ++n) {
    dequantize_row(wt, static_cast<const uint8_t*>(w) + n * rb, row.data(), int64_t(K));
    for (size_t m = 0; m < M; ++m) {
      double acc = 0;
      for (size_t k = 0; k < K; ++k) acc += double(row[k]) * x[m * K + k];
      y[m * N + n] = float(acc);
    }
  }
}

}  // namespace snapvk::ref
