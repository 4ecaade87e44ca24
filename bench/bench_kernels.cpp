// Kernel micro-benchmarks with Google Benchmark. Times are GPU timestamps of the dispatches
// (manual time); bytes/s counts the weights and activations each kernel must read and write.
//   build/bench/snapvk_bench_kernels --benchmark_filter=matvec
#include <benchmark/benchmark.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <random>

#include "host/gguf/quant.h"
#include "host/kernels/attention.h"
#include "host/kernels/ops.h"

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

const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,   GgmlType::Q4_0,
                           GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0,   GgmlType::Q5_1,
                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q5_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
constexpr int kNumTypes = int(std::size(kTypes));

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
  Buffer W = random_weights(g.ctx, t, N, K), x = random_buffer(g.ctx, uint64_t(M) * K, 1),
         y(g.ctx, uint64_t(M) * N * 4);
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
  Buffer x = random_buffer(g.ctx, uint64_t(rows) * n, 1), w = random_buffer(g.ctx, n, 2),
         y(g.ctx, uint64_t(rows) * n * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_rms_norm(cs, g.k, x, w, y, rows, n, 1e-5f); });
  state.SetBytesProcessed(int64_t(state.iterations() * 8ull * rows * n));
}

void BM_add(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t n = uint32_t(state.range(0));
  Buffer a = random_buffer(g.ctx, n, 1), b = random_buffer(g.ctx, n, 2), c(g.ctx, n * 4ull);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_add(cs, g.k, a, b, c, n, n); });
  state.SetBytesProcessed(int64_t(state.iterations() * 12ull * n));
}

void BM_get_rows(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const GgmlType t = kTypes[state.range(0)];
  const uint32_t n = 1024, rows = 512;
  Buffer table = random_weights(g.ctx, t, 32000, n), y(g.ctx, uint64_t(rows) * n * 4);
  std::vector<int32_t> ids(rows);
  for (uint32_t i = 0; i < rows; ++i) ids[i] = int32_t((i * 7919) % 32000);
  Buffer idb(g.ctx, rows * 4ull);
  idb.upload(ids.data(), ids.size() * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_get_rows(cs, g.k, t, table, idb, y, rows, n); });
  state.SetLabel(type_name(t));
}

void BM_rope(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t T = uint32_t(state.range(0)), heads = 16, hd = 64;
  Buffer x = random_buffer(g.ctx, uint64_t(T) * heads * hd, 1), f = random_buffer(g.ctx, hd / 2, 2);
  time_gpu(state, g.ctx, [&](CommandStream& cs) {
    op_rope(cs, g.k, x, f, false, T, heads, RopeParams{hd, hd, 100, 10000.0f, 0});
  });
}

void BM_swiglu(benchmark::State& state) {
  Gpu& g = Gpu::get();
  const uint32_t n = uint32_t(state.range(0));
  Buffer a = random_buffer(g.ctx, n, 1), b = random_buffer(g.ctx, n, 2), c(g.ctx, n * 4ull);
  time_gpu(state, g.ctx, [&](CommandStream& cs) { op_swiglu(cs, g.k, a, b, c, n); });
  state.SetBytesProcessed(int64_t(state.iterations() * 12ull * n));
}

// ---- attention and SnapKV: shape small-gqa (8 query heads, 4 KV heads, head_dim 32), f16 cache ----
struct AttnBench {
  static constexpr uint32_t kHeads = 8, kKv = 4, kHd = 32, kWindow = 32;
  AttentionKernels ak;
  explicit AttnBench(Gpu& g) : ak(g.ctx, g.k.tuning, kHd, kHeads / kKv) {}
  // A full cache of L slots per KV head, random f16 rows, and its heads table.
  struct Cache {
    Buffer k, v, heads;
  };
  static Cache cache(Gpu& g, uint32_t L) {
    const uint64_t bytes = uint64_t(kKv) * L * kv_row_bytes(KvType::F16, kHd);
    Cache c{Buffer(g.ctx, bytes), Buffer(g.ctx, bytes), Buffer(g.ctx, 8ull * kKv)};
    std::vector<uint16_t> rows(bytes / 2);
    std::mt19937 rng(3);
    std::normal_distribution<float> d;
    for (auto& r : rows) r = fp32_to_fp16(d(rng));
    c.k.upload(rows.data(), bytes);
    c.v.upload(rows.data(), bytes);
    std::vector<uint32_t> table(2 * kKv);
    for (uint32_t h = 0; h < kKv; ++h) table[2 * h] = h * L, table[2 * h + 1] = L;
    c.heads.upload(table.data(), table.size() * 4);
    return c;
  }
};

// Prefill attention: the last 256 queries of a prompt of L tokens against all L keys.
void BM_attn_prefill(benchmark::State& state) {
  Gpu& g = Gpu::get();
  AttnBench a(g);
  const uint32_t L = uint32_t(state.range(0)), T = 256;
  auto c = AttnBench::cache(g, L);
  std::vector<uint32_t> table(2 * AttnBench::kKv);  // the T queries are the last appended slots
  for (uint32_t h = 0; h < AttnBench::kKv; ++h) table[2 * h] = h * L, table[2 * h + 1] = 0;
  c.heads.upload(table.data(), table.size() * 4);
  Buffer q = random_buffer(g.ctx, uint64_t(T) * AttnBench::kHeads * AttnBench::kHd, 1),
         o(g.ctx, uint64_t(T) * AttnBench::kHeads * AttnBench::kHd * 4),
         part(g.ctx, std::max<uint64_t>(1, attn_prefill_state_floats(a.ak, T, AttnBench::kHeads, L)) * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) {
    op_attn_prefill(cs, g.k, a.ak, KvTypes{}, q, c.k, c.v, c.heads, part, o, T, AttnBench::kHeads, AttnBench::kKv,
                    L - T, L, 0.17f);
  });
}

// Decode attention over a cache of L entries per head (split + combine).
void BM_attn_decode(benchmark::State& state) {
  Gpu& g = Gpu::get();
  AttnBench a(g);
  const uint32_t L = uint32_t(state.range(0));
  auto c = AttnBench::cache(g, L);
  Buffer q = random_buffer(g.ctx, AttnBench::kHeads * AttnBench::kHd, 1),
         o(g.ctx, AttnBench::kHeads * AttnBench::kHd * 4ull);
  Buffer part(g.ctx, attn_partial_floats(a.ak, AttnBench::kHeads, L) * 4);
  time_gpu(state, g.ctx, [&](CommandStream& cs) {
    op_attn_decode(cs, g.k, a.ak, KvTypes{}, q, c.k, c.v, c.heads, part, o, AttnBench::kHeads, AttnBench::kKv, L, 0,
                   0.17f);
  });
  state.SetBytesProcessed(
      int64_t(state.iterations() * 2 * uint64_t(AttnBench::kKv) * L * kv_row_bytes(KvType::F16, AttnBench::kHd)));
}

// The SnapKV passes for one layer of a prompt of L tokens: window scores (stats + votes),
// pooling, top-(C - W) selection and the gather, each its own benchmark.
void BM_snapkv(benchmark::State& state) {
  Gpu& g = Gpu::get();
  AttnBench a(g);
  const uint32_t L = uint32_t(state.range(1)), W = AttnBench::kWindow, C = 1024, P = L - W, count = C - W;
  const uint32_t n_kv = AttnBench::kKv, n_head = AttnBench::kHeads;
  auto c = AttnBench::cache(g, L);
  std::vector<uint32_t> table(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) table[2 * h] = h * L, table[2 * h + 1] = 0;
  c.heads.upload(table.data(), table.size() * 4);
  Buffer q = random_buffer(g.ctx, uint64_t(W) * n_head * AttnBench::kHd, 1), stats(g.ctx, uint64_t(n_head) * W * 8);
  Buffer votes = random_buffer(g.ctx, uint64_t(n_kv) * P, 2), pooled = random_buffer(g.ctx, uint64_t(n_kv) * P, 3);
  Buffer sel(g.ctx, uint64_t(n_kv) * count * 4), info(g.ctx, 8ull * n_kv), out_heads(g.ctx, 8ull * n_kv);
  std::vector<uint32_t> inf(2 * n_kv), oh(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) inf[2 * h] = h * count, inf[2 * h + 1] = 0, oh[2 * h] = h * C, oh[2 * h + 1] = C;
  info.upload(inf.data(), inf.size() * 4);
  out_heads.upload(oh.data(), oh.size() * 4);
  const uint64_t out_bytes = uint64_t(n_kv) * C * kv_row_bytes(KvType::F16, AttnBench::kHd);
  Buffer out_k(g.ctx, out_bytes), out_v(g.ctx, out_bytes);
  {  // a valid selection for the gather benchmark
    CommandStream cs(g.ctx);
    cs.begin();
    op_topk(cs, g.k, a.ak, pooled, sel, n_kv, P, count);
    cs.submit();
  }
  const float scale = 0.17f;
  switch (state.range(0)) {
    case 0:
      state.SetLabel("window scores");
      time_gpu(state, g.ctx, [&](CommandStream& cs) {
        op_window_stats(cs, g.k, a.ak, KvType::F16, q, c.k, c.heads, stats, L, W, n_head, n_kv, scale);
        cs.barrier();
        op_window_votes(cs, g.k, a.ak, KvType::F16, q, c.k, stats, votes, c.heads, votes, L, W, P, n_head, n_kv, scale,
                        GqaAgg::Mean);
      });
      break;
    case 1:
      state.SetLabel("pool");
      time_gpu(state, g.ctx, [&](CommandStream& cs) { op_pool(cs, g.k, a.ak, votes, pooled, P, n_kv, 7, false); });
      break;
    case 2:
      state.SetLabel("top-K");
      time_gpu(state, g.ctx, [&](CommandStream& cs) { op_topk(cs, g.k, a.ak, pooled, sel, n_kv, P, count); });
      break;
    default:
      state.SetLabel("gather");
      time_gpu(state, g.ctx, [&](CommandStream& cs) {
        op_kv_gather(cs, g.k, a.ak, c.k, c.v, out_k, out_v, sel, info, out_heads, n_kv,
                     KvTypes{}, C, L, P, W);
      });
  }
}

void matvec_args(benchmark::internal::Benchmark* b) {
  for (int t = 0; t < kNumTypes; ++t) b->Args({t, 2816, 1024})->Args({t, 4096, 4096});
}
void matmul_args(benchmark::internal::Benchmark* b) {
  for (int kind : {0, 1})
    for (int t : {0, 1, 3, 5}) b->Args({t, 128, 1024, 1024, kind})->Args({t, 512, 2816, 1024, kind});
}

BENCHMARK(BM_matvec)->Apply(matvec_args)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_matmul)->Apply(matmul_args)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rms_norm)->Args({1, 4096})->Args({512, 1024})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_add)->Arg(1 << 20)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_get_rows)->DenseRange(0, kNumTypes - 1)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_rope)->Arg(1)->Arg(512)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_swiglu)->Arg(2816)->Arg(512 * 2816)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attn_prefill)->Arg(512)->Arg(2048)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_attn_decode)->Arg(1024)->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_snapkv)->ArgsProduct({{0, 1, 2, 3}, {8192, 32768}})->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace snapvk

BENCHMARK_MAIN();
