// Kernel micro-benchmarks with Google Benchmark. Times are GPU timestamps of the dispatches
// (manual time); bytes/s counts the weights and activations each kernel must read and write.
//   build/bench/snapvk_bench_kernels --benchmark_filter=matvec
#include <benchmark/benchmark.h>

#include <memory>
#include <random>

#include "host/ops.h"
#include "host/quant.h"

namespace snapvk {
namespace {

struct Gpu {
  Context ctx;
  Kernels k{ctx};
  static Gpu& get() {
    static Gpu g;
    return g;
  }
};

Buffer random_buffer(Context& ctx, uint64_t floats, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(floats);
  for (auto& x : v) x = d(rng);
  Buffer b(ctx, floats * 4);
  b.upload(v.data(), v.size() * 4);
  return b;
}

Buffer random_weights(Context& ctx, GgmlType t, uint32_t rows, uint32_t cols) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> row(cols);
  const uint64_t rb = row_bytes(t, cols);
  std::vector<uint8_t> raw(rb * rows);
  for (uint32_t r = 0; r < rows; ++r) {
    for (auto& x : row) x = d(rng);
    quantize_row(t, row.data(), raw.data() + r * rb, cols);
  }
  Buffer b(ctx, (raw.size() + 3) / 4 * 4);
  b.upload(raw.data(), raw.size());
  return b;
}

// Runs `record` once per iteration in its own submit and reports the GPU time of its dispatches.
template <class F>
void time_gpu(benchmark::State& state, Context& ctx, F record) {
  CommandStream cs(ctx, 64);
  cs.set_profiling(true);
  for (auto _ : state) {
    cs.reset_timings();
    cs.begin();
    record(cs);
    cs.submit();
    double ms = 0;
    for (const auto& t : cs.timings()) ms += t.total_ms;
    state.SetIterationTime(ms / 1e3);
  }
}

const GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                           GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K};

// Decode projection: y[N] = W[N, K] x. Reported as weight bytes read per second.
void BM_matvec(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const GgmlType t = kTypes[state.range(0)];
  const uint32_t N = uint32_t(state.range(1)), K = uint32_t(state.range(2));
  Buffer W = random_weights(g.ctx, t, N, K), x = random_buffer(g.ctx, K, 1), y(g.ctx, N * 4ull);
  {  // one untimed run first, so that first-use costs (caches, pages) stay out of the timings
    CommandStream cs(g.ctx);
    cs.begin();
    op_matvec(cs, g.k, t, W, x, y, N, K);
    cs.submit();
  }
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_matvec(cs, g.k, t, W, x, y, N, K); });
  state.SetLabel(type_name(t));
  state.SetBytesProcessed(int64_t(state.iterations() * row_bytes(t, K) * N));
}

// Prefill projection: Y[M, N] = X[M, K] W^T. Reported as FLOP/s.
void BM_matmul(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const GgmlType t = kTypes[state.range(0)];
  const uint32_t M = uint32_t(state.range(1)), N = uint32_t(state.range(2)), K = uint32_t(state.range(3));
  Buffer W = random_weights(g.ctx, t, N, K), x = random_buffer(g.ctx, uint64_t(M) * K, 1), y(g.ctx, uint64_t(M) * N * 4);
  const bool saved = g.k.tuning.matmul_rows;
  g.k.tuning.matmul_rows = state.range(4) != 0;
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_matmul(cs, g.k, t, W, x, y, M, N, K); });
  g.k.tuning.matmul_rows = saved;
  state.SetLabel(std::string(type_name(t)) + (state.range(4) ? " rows" : " tiled"));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_rms_norm(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t rows = uint32_t(state.range(0)), n = uint32_t(state.range(1));
  Buffer x = random_buffer(g.ctx, uint64_t(rows) * n, 1), w = random_buffer(g.ctx, n, 2), y(g.ctx, uint64_t(rows) * n * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_rms_norm(cs, g.k, x, w, y, rows, n, 1e-5f); });
  state.SetBytesProcessed(int64_t(state.iterations() * 8ull * rows * n));
}

void BM_softmax(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t rows = uint32_t(state.range(0)), n = uint32_t(state.range(1));
  Buffer x = random_buffer(g.ctx, uint64_t(rows) * n, 1), y(g.ctx, uint64_t(rows) * n * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_softmax(cs, g.k, x, y, rows, n, 1.0f); });
  state.SetBytesProcessed(int64_t(state.iterations() * 8ull * rows * n));
}

void BM_add(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t n = uint32_t(state.range(0));
  Buffer a = random_buffer(g.ctx, n, 1), b = random_buffer(g.ctx, n, 2), c(g.ctx, n * 4ull);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_add(cs, g.k, a, b, c, n, n); });
  state.SetBytesProcessed(int64_t(state.iterations() * 12ull * n));
}

void matvec_args(benchmark::internal::Benchmark* b) {
  for (int t = 0; t < 7; ++t) b->Args({t, 2816, 1024})->Args({t, 4096, 4096});
}
void matmul_args(benchmark::internal::Benchmark* b) {
  for (int kind : {0, 1})
    for (int t : {0, 1, 3, 5}) b->Args({t, 128, 1024, 1024, kind})->Args({t, 512, 2816, 1024, kind});
}

BENCHMARK(BM_matvec)->Apply(matvec_args)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_matmul)->Apply(matmul_args)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rms_norm)->Args({1, 4096})->Args({512, 1024})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax)->Args({32, 4096})->Args({512, 1024})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_add)->Arg(1 << 20)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace snapvk

BENCHMARK_MAIN();
