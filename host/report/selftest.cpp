#include "host/report/selftest.h"

#include <cmath>
#include <functional>
#include <random>

#include "host/gguf/quant.h"
#include "host/ref/reference.h"

namespace snapvk {

namespace {

std::vector<float> rand_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Buffer to_device(Context& ctx, const void* data, size_t bytes) {
  Buffer b(ctx, (bytes + 3) / 4 * 4);
  b.upload(data, bytes);
  return b;
}

double max_err(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// Runs `record` in its own command stream with timestamps, then compares `out` with `want`.
SelfTestResult check(Context& ctx, const char* kernel, std::string shape, double tol, const Buffer& out,
                     const std::vector<float>& want, const std::function<void(CommandStream&)>& record) {
  CommandStream cs(ctx, 8);
  cs.set_profiling(true);
  cs.begin();
  record(cs);
  cs.submit();
  std::vector<float> got(want.size());
  out.download(got.data(), got.size() * 4);
  SelfTestResult r{kernel, std::move(shape), max_err(got, want), tol, 0};
  for (const auto& t : cs.timings()) r.ms += t.total_ms;
  return r;
}

}  // namespace

std::vector<SelfTestResult> run_selftest(Context& ctx, const Kernels& k) {
  std::vector<SelfTestResult> out;
  const uint32_t n = 4099, rows = 7;
  auto a = rand_vec(n * rows, 1), b = rand_vec(n, 2), w = rand_vec(n, 3);
  Buffer A = to_device(ctx, a.data(), a.size() * 4), B = to_device(ctx, b.data(), b.size() * 4),
         W = to_device(ctx, w.data(), w.size() * 4), C(ctx, a.size() * 4);
  std::vector<float> want(a.size());

  ref::add(a.data(), b.data(), want.data(), a.size(), n);
  out.push_back(
      check(ctx, "add", "7x4099", 0, C, want, [&](CommandStream& cs) { op_add(cs, k, A, B, C, n * rows, n); }));
  ref::mul(a.data(), b.data(), want.data(), a.size(), n);
  out.push_back(
      check(ctx, "mul", "7x4099", 0, C, want, [&](CommandStream& cs) { op_mul(cs, k, A, B, C, n * rows, n); }));
  ref::rms_norm(a.data(), w.data(), want.data(), rows, n, 1e-5f);
  out.push_back(check(ctx, "rms_norm", "7x4099", 1e-5, C, want,
                      [&](CommandStream& cs) { op_rms_norm(cs, k, A, W, C, rows, n, 1e-5f); }));

  const uint32_t M = 33, N = 1000, K = 1024;
  auto x = rand_vec(size_t(M) * K, 4), wf = rand_vec(size_t(N) * K, 5);
  Buffer X = to_device(ctx, x.data(), x.size() * 4), Y(ctx, size_t(M) * N * 4);
  for (GgmlType wt : {GgmlType::F32, GgmlType::F16}) {
    const uint64_t rb = row_bytes(wt, K);
    std::vector<uint8_t> raw(rb * N);
    for (uint32_t r = 0; r < N; ++r) quantize_row(wt, wf.data() + size_t(r) * K, raw.data() + r * rb, K);
    Buffer Wq = to_device(ctx, raw.data(), raw.size());
    const std::string t = type_name(wt);
    std::vector<float> mv(N), mm(size_t(M) * N);
    ref::matmul(wt, raw.data(), x.data(), mv.data(), 1, N, K);
    ref::matmul(wt, raw.data(), x.data(), mm.data(), M, N, K);
    out.push_back(check(ctx, ("matvec_" + t + "_f32").c_str(), "1000x1024", 1e-4, Y, mv,
                        [&](CommandStream& cs) { op_matvec(cs, k, wt, Wq, X, Y, N, K); }));
    out.push_back(check(ctx, ("matmul_" + t + "_f32").c_str(), "33x1000x1024", 1e-4, Y, mm,
                        [&](CommandStream& cs) { op_matmul(cs, k, wt, Wq, X, Y, M, N, K); }));
  }
  return out;
}

}  // namespace snapvk
