#include "host/ref/reference.h"

#include <algorithm>
#include <cmath>

#include "host/gguf/quant.h"

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

void get_rows(GgmlType wt, const void* table, const int32_t* ids, float* y, size_t rows, size_t n) {
  const uint64_t rb = row_bytes(wt, n);
  for (size_t t = 0; t < rows; ++t)
    dequantize_row(wt, static_cast<const uint8_t*>(table) + size_t(ids[t]) * rb, y + t * n, int64_t(n));
}

void rope(float* x, size_t T, size_t n_heads, size_t head_dim, size_t n_rot, size_t pos0, float base, bool neox,
          const float* factors, float freq_scale) {
  for (size_t t = 0; t < T; ++t)
    for (size_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      for (size_t i = 0; i < n_rot / 2; ++i) {
        double theta = double(pos0 + t) * freq_scale * std::pow(double(base), -2.0 * double(i) / double(n_rot));
        if (factors) theta /= factors[i];
        const size_t a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        const double x0 = v[a], x1 = v[b];
        v[a] = float(x0 * std::cos(theta) - x1 * std::sin(theta));
        v[b] = float(x0 * std::sin(theta) + x1 * std::cos(theta));
      }
    }
}

void swiglu(const float* g, const float* u, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = float(double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i]);
}

void geglu(const float* g, const float* u, float* y, size_t n) {
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  for (size_t i = 0; i < n; ++i) {
    const double x = g[i];
    y[i] = float(0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x))) * u[i]);
  }
}

void softcap(float* x, size_t n, float cap) {
  for (size_t i = 0; i < n; ++i) x[i] = float(double(cap) * std::tanh(double(x[i]) / cap));
}

void attend(const float* q, const float* const* keys, const float* const* values, size_t n, size_t hd, float scale,
            float* out) {
  std::vector<double> s(n);
  double m = -INFINITY;
  for (size_t j = 0; j < n; ++j) {
    double acc = 0;
    for (size_t d = 0; d < hd; ++d) acc += double(q[d]) * keys[j][d];
    s[j] = acc * scale;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  for (size_t j = 0; j < n; ++j) sum += s[j] = std::exp(s[j] - m);
  for (size_t d = 0; d < hd; ++d) {
    double acc = 0;
    for (size_t j = 0; j < n; ++j) acc += s[j] * values[j][d];
    out[d] = float(acc / sum);
  }
}

}  // namespace snapvk::ref
