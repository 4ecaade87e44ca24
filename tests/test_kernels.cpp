// Every kernel against its scalar reference on odd, unaligned shapes, with a per-op tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <string>

#include "host/gguf/quant.h"
#include "host/ref/reference.h"
#include "snapvk_shaders.h"
#include "tests/gpu_fixture.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

const uint32_t kSizes[] = {1, 7, 33, 1000, 4099};

struct Kernel : VkTest {};

// Elementwise ops do one f32 operation per element: results are exact.
TEST_F(Kernel, AddAndMulMatchReferenceExactly) {
  for (uint32_t n : kSizes) {
    for (uint32_t nb : {n, 1u}) {
      auto a = random_floats(n, 1 + n), b = random_floats(nb, 2 + n);
      Buffer A = upload(a), B = upload(b), C(ctx(), n * 4);
      std::vector<float> want(n);
      for (int op = 0; op < 2; ++op) {
        CommandStream cs(ctx());
        cs.begin();
        (op == 0 ? op_add : op_mul)(cs, k(), A, B, C, n, nb);
        cs.submit();
        (op == 0 ? ref::add : ref::mul)(a.data(), b.data(), want.data(), n, nb);
        EXPECT_EQ(max_abs_diff(download<float>(C, n), want), 0.0f) << "op " << op << " n=" << n << " nb=" << nb;
      }
    }
  }
}

// fp32 sum of squares in a different order than the double reference: 1e-5 relative.
TEST_F(Kernel, RmsNormMatchesReference) {
  for (uint32_t n : kSizes) {
    for (uint32_t rows : {1u, 3u, 17u}) {
      auto x = random_floats(size_t(rows) * n, 3 + n, -3, 3), w = random_floats(n, 4 + n, 0.5f, 1.5f);
      Buffer X = upload(x), W = upload(w), Y(ctx(), x.size() * 4);
      CommandStream cs(ctx());
      cs.begin();
      op_rms_norm(cs, k(), X, W, Y, rows, n, 1e-5f);
      cs.submit();
      std::vector<float> want(x.size());
      ref::rms_norm(x.data(), w.data(), want.data(), rows, n, 1e-5f);
      EXPECT_LE(max_abs_diff(download<float>(Y, x.size()), want), 1e-5f * 3 * 1.5f * 2)
          << "n=" << n << " rows=" << rows;
    }
  }
}

// Weights of type `wt` made from random floats, as raw rows.
std::vector<uint8_t> make_weights(GgmlType wt, uint32_t N, uint32_t K, uint32_t seed) {
  auto f = random_floats(size_t(N) * K, seed);
  const uint64_t rb = row_bytes(wt, K);
  std::vector<uint8_t> raw(rb * N);
  for (uint32_t n = 0; n < N; ++n) quantize_row(wt, f.data() + size_t(n) * K, raw.data() + n * rb, K);
  return raw;
}

// Dot products of K terms in fp32 against a double reference: error grows like sqrt(K) * eps * |terms|.
float matmul_tolerance(uint32_t K) { return 2e-6f * std::sqrt(float(K)) * 4 + 1e-6f; }

class KernelMatvec : public VkTest, public ::testing::WithParamInterface<GgmlType> {
 protected:
  // y = W x for odd, unaligned shapes against the reference, with whatever matvec kernel is in k().
  void check_shapes(const std::string& what) {
    const GgmlType wt = GetParam();
    for (uint32_t N : {1u, 7u, 33u, 1000u}) {
      for (uint32_t K : {1u, 7u, 32u, 33u, 96u, 256u, 1000u, 1280u, 4099u}) {
        if (K % traits_of(wt).block_size) continue;
        auto w = make_weights(wt, N, K, N * 31 + K);
        auto x = random_floats(K, K + 7);
        Buffer Wb = upload(w), X = upload(x), Y(ctx(), N * 4);
        CommandStream cs(ctx());
        cs.begin();
        op_matvec(cs, k(), wt, Wb, X, Y, N, K);
        cs.submit();
        std::vector<float> want(N);
        ref::matmul(wt, w.data(), x.data(), want.data(), 1, N, K);
        EXPECT_LE(max_abs_diff(download<float>(Y, N), want), matmul_tolerance(K))
            << type_name(wt) << " " << what << " N=" << N << " K=" << K;
      }
    }
  }
  // The matvec's fused ops (MatvecFuse) against the composition of their references, on odd shapes:
  // rmsnorm then the product, the product added to y, and rmsnorm then gate and up of a [2N, K]
  // stack with SwiGLU or GeGLU.
  void check_fused(const std::string& variant) {
      const GgmlType wt = GetParam();
    const float eps = 1e-5f;
    for (uint32_t N : {1u, 7u, 33u}) {
      for (uint32_t K : {7u, 32u, 96u, 256u, 1280u}) {
        if (K % traits_of(wt).block_size) continue;
        const std::string where = std::string(type_name(wt)) + " " + variant + " N=" + std::to_string(N) + " K=" + std::to_string(K);
        auto w = make_weights(wt, 2 * N, K, N * 13 + K);  // gate rows, then up rows (a plain product uses the first N)
        auto x = random_floats(K, K + 3, -2.0f, 2.0f), g = random_floats(K, K + 4, 0.5f, 1.5f);
        auto y0 = random_floats(N, N + 5);
        std::vector<float> xn(K), prod(2 * N), want(N);
        ref::rms_norm(x.data(), g.data(), xn.data(), 1, K, eps);
        Buffer Wb = upload(w), X = upload(x), G = upload(g);
        const BufferRange norm = G;
        auto run = [&](const MatvecFuse& f, const std::vector<float>& init) {
          Buffer Y = upload(init);
          CommandStream cs(ctx());
          cs.begin();
          op_matvec(cs, k(), wt, Wb, X, Y, N, K, f);
          cs.submit();
          EXPECT_EQ(cs.dispatches(), 1u) << where;
          return download<float>(Y, N);
        };
        const float tol = matmul_tolerance(K) * 4;  // xn is about 1.7x x; the norm's own rounding
        // y = W rmsnorm(x)
        ref::matmul(wt, w.data(), xn.data(), prod.data(), 1, N, K);
        EXPECT_LE(max_abs_diff(run(MatvecFuse{&norm, eps}, y0), std::vector<float>(prod.begin(), prod.begin() + N)), tol)
            << "norm " << where;
        // y += W x
        ref::matmul(wt, w.data(), x.data(), prod.data(), 1, N, K);
        ref::add(y0.data(), prod.data(), want.data(), N, N);
        EXPECT_LE(max_abs_diff(run(MatvecFuse{.add = true}, y0), want), tol) << "add " << where;
        // y = act(W_gate rmsnorm(x)) * (W_up rmsnorm(x))
        if (k().tuning.matvec_rows % 2) continue;
        ref::matmul(wt, w.data(), xn.data(), prod.data(), 1, 2 * N, K);
        for (Glu glu : {Glu::Silu, Glu::Gelu}) {
          (glu == Glu::Silu ? ref::swiglu : ref::geglu)(prod.data(), prod.data() + N, want.data(), N);
          float scale = 1;
          for (float v : prod) scale = std::max(scale, std::abs(v));
          EXPECT_LE(max_abs_diff(run(MatvecFuse{&norm, eps, false, glu}, y0), want), tol * 2 * scale)
              << (glu == Glu::Silu ? "swiglu " : "geglu ") << where;
        }
      }
    }
  }
};

// The matvec SPIR-V of a weight type: portable, or with 64-bit loads (the CPU-device choice).
std::span<const uint32_t> matvec_spirv(GgmlType wt, bool int64) {
#define SNAPVK_MATVEC(KIND, w) \
  case KIND: return int64 ? spv::matvec_##w##_f32_i64() : spv::matvec_##w##_f32();
  switch (weight_kind(wt)) {
    SNAPVK_MATVEC(kWeightF32, f32)
    SNAPVK_MATVEC(kWeightF16, f16)
    SNAPVK_MATVEC(kWeightBF16, bf16)
    SNAPVK_MATVEC(kWeightQ8_0, q8_0)
    SNAPVK_MATVEC(kWeightQ4_0, q4_0)
    SNAPVK_MATVEC(kWeightQ4_K, q4_k)
    SNAPVK_MATVEC(kWeightQ6_K, q6_k)
    SNAPVK_MATVEC(kWeightQ4_1, q4_1)
    SNAPVK_MATVEC(kWeightQ5_0, q5_0)
    SNAPVK_MATVEC(kWeightQ5_1, q5_1)
    SNAPVK_MATVEC(kWeightQ2_K, q2_k)
    SNAPVK_MATVEC(kWeightQ3_K, q3_k)
    SNAPVK_MATVEC(kWeightQ5_K, q5_k)
    SNAPVK_MATVEC(kWeightIQ4_NL, iq4_nl)
    SNAPVK_MATVEC(kWeightIQ4_XS, iq4_xs)
    case kWeightKinds: break;
  }
#undef SNAPVK_MATVEC
  throw Error(ErrorKind::Internal, std::string("no matvec variant for ") + type_name(wt));
}

// Each build of a matvec whatever the device: both SPIR-V builds, and a workgroup of one subgroup
// (no barrier) and of four (the shared-memory reduction). f(int64, wg, one_subgroup, several).
template <class F>
void each_matvec_build(const DeviceInfo& info, F&& f) {
  const uint32_t sg = std::max<uint32_t>(1, info.subgroup_size);
  for (bool int64 : {false, true}) {
    if (int64 && !info.int64) continue;
    for (uint32_t subgroups : {1u, 4u}) {
      const uint32_t wg = std::max(sg, std::min(sg * subgroups, info.max_workgroup_invocations / sg * sg));
      const bool one = info.min_subgroup_size > 0 && wg <= info.min_subgroup_size;
      f(int64, wg, one, subgroups > 1);
    }
  }
}

// Pipelines swapped into the shared kernels, with the rows per workgroup they were made for, for a
// scope: the kernels are shared by all tests, so the device's are put back.
struct SwappedPipelines {
  Kernels& k;
  std::vector<std::pair<Pipeline*, Pipeline>> swaps;  // slot, and the pipeline not in it
  uint32_t rows;
  SwappedPipelines(Kernels& kernels, std::vector<std::pair<Pipeline*, Pipeline>> s, uint32_t r)
      : k(kernels), swaps(std::move(s)), rows(k.tuning.matvec_rows) {
    for (auto& [slot, other] : swaps) std::swap(*slot, other);
    k.tuning.matvec_rows = r;
  }
  ~SwappedPipelines() {
    for (auto& [slot, other] : swaps) std::swap(*slot, other);
    k.tuning.matvec_rows = rows;
  }
};

std::string build_name(bool int64, uint32_t wg, uint32_t rows) {
  return std::string(int64 ? "i64" : "portable") + " wg=" + std::to_string(wg) + " rows=" + std::to_string(rows);
}

TEST_P(KernelMatvec, MatchesReference) {
  check_shapes("(device tuning)");
  // every build, with an odd row count where the workgroup reduces through shared memory
  const GgmlType wt = GetParam();
  each_matvec_build(ctx().info(), [&](bool int64, uint32_t wg, bool one, bool several) {
    const uint32_t rows = several ? 3 : 8;
    std::vector<std::pair<Pipeline*, Pipeline>> swaps;
    swaps.emplace_back(&k().weights(weight_kind(wt)).matvec,
                       Pipeline(ctx(), PipelineDesc{"matvec_test", matvec_spirv(wt, int64), 4, sizeof(MatvecPush),
                                                    {wg, rows, one}, 0}));
    const SwappedPipelines swapped(k(), std::move(swaps), rows);
    check_shapes(build_name(int64, wg, rows));
  });
}

// Fused ops with the device's pipelines, then with every build (the shared-memory reduction
// carries the norm's sum too); a GLU pairs rows, so the row counts are even.
TEST_P(KernelMatvec, FusedOpsMatchTheirReferences) {
  const GgmlType wt = GetParam();
  check_fused("(device tuning)");
  each_matvec_build(ctx().info(), [&](bool int64, uint32_t wg, bool one, bool several) {
    const uint32_t rows = several ? 4 : 8;
    WeightKernels& wk = k().weights(weight_kind(wt));
    auto make = [&](uint32_t norm, uint32_t add, Glu glu) {
      return Pipeline(ctx(), PipelineDesc{"matvec_test", matvec_spirv(wt, int64), 4, sizeof(MatvecPush),
                                          {wg, rows, one, norm, add, uint32_t(glu)}, 0});
    };
    std::vector<std::pair<Pipeline*, Pipeline>> swaps;
    swaps.emplace_back(&wk.matvec_norm, make(1, 0, Glu::None));
    swaps.emplace_back(&wk.matvec_add, make(0, 1, Glu::None));
    swaps.emplace_back(&wk.matvec_norm_swiglu, make(1, 0, Glu::Silu));
    swaps.emplace_back(&wk.matvec_norm_geglu, make(1, 0, Glu::Gelu));
    const SwappedPipelines swapped(k(), std::move(swaps), rows);
    check_fused(build_name(int64, wg, rows));
  });
}

// Weights larger than a storage-buffer binding may be are split into row slices, each bound at
// an aligned offset: forced here by a small max_binding_range.
TEST_P(KernelMatvec, SplitsWeightsLargerThanOneBinding) {
  const GgmlType wt = GetParam();
  const uint32_t K = 512;
  const uint64_t rb = row_bytes(wt, K), align = std::max<uint64_t>(4, ctx().info().min_storage_buffer_offset_alignment);
  const uint64_t step =
      std::lcm(align / std::gcd(align, rb), align / std::gcd(align, uint64_t(4)));  // rows per aligned slice
  const uint32_t N = uint32_t(3 * step + (step + 1) / 2);  // three full slices and a shorter one
  auto w = make_weights(wt, N, K, 11);
  auto x = random_floats(K, 12);
  Buffer Wb = upload(w), X = upload(x), Y(ctx(), N * 4);
  struct Restore {  // the kernels are shared by all tests
    uint64_t &value, saved;
    ~Restore() { value = saved; }
  } restore{k().tuning.max_binding_range, k().tuning.max_binding_range};
  k().tuning.max_binding_range = step * rb + 4;
  CommandStream cs(ctx());
  cs.begin();
  op_matvec(cs, k(), wt, Wb, X, Y, N, K);
  cs.submit();
  EXPECT_EQ(cs.dispatches(), 4u);
  std::vector<float> want(N);
  ref::matmul(wt, w.data(), x.data(), want.data(), 1, N, K);
  EXPECT_LE(max_abs_diff(download<float>(Y, N), want), matmul_tolerance(K)) << type_name(wt) << " N=" << N;
}

class KernelMatmul : public VkTest, public ::testing::WithParamInterface<GgmlType> {};

TEST_P(KernelMatmul, MatchesReference) {
  const GgmlType wt = GetParam();
  const bool saved = k().tuning.matmul_rows;
  for (bool rows_kernel : {false, true}) {  // both the GPU tiling and the CPU variant, whatever the device
    k().tuning.matmul_rows = rows_kernel;
    for (uint32_t M : {1u, 3u, 7u, 33u, 70u}) {  // (1 and 3: matmul_rows' variants for a few rows)
      for (uint32_t N : {1u, 33u, 65u, 300u}) {
        for (uint32_t K : {1u, 7u, 32u, 33u, 100u, 256u, 512u, 1000u}) {
          if (K % traits_of(wt).block_size) continue;
          auto w = make_weights(wt, N, K, M * 7 + N * 31 + K);
          auto x = random_floats(size_t(M) * K, M + K);
          Buffer Wb = upload(w), X = upload(x), Y(ctx(), size_t(M) * N * 4);
          CommandStream cs(ctx());
          cs.begin();
          op_matmul(cs, k(), wt, Wb, X, Y, M, N, K);
          cs.submit();
          std::vector<float> want(size_t(M) * N);
          ref::matmul(wt, w.data(), x.data(), want.data(), M, N, K);
          EXPECT_LE(max_abs_diff(download<float>(Y, want.size()), want), matmul_tolerance(K))
              << type_name(wt) << (rows_kernel ? " rows" : " tiled") << " M=" << M << " N=" << N << " K=" << K;
        }
      }
    }
  }
  k().tuning.matmul_rows = saved;
}

// Operands larger than one binding (a 262144-token LM head and its logits for a batch of rows) are
// split into tiles of X/Y rows by W rows, each bound at an aligned offset: forced here by a small
// max_binding_range that splits W in about four and X and Y in several row slices.
TEST_P(KernelMatmul, SplitsOperandsLargerThanOneBinding) {
  const GgmlType wt = GetParam();
  const uint32_t M = 37, K = 256;
  const uint64_t rb = row_bytes(wt, K), align = std::max<uint64_t>(4, ctx().info().min_storage_buffer_offset_alignment);
  // W's slices start at multiples of w_step rows (aligned weight and output offsets: slice_rows)
  const uint64_t w_step = std::lcm(align / std::gcd(align, rb), align / std::gcd(align, uint64_t(4)));
  // eight rows of X, or a slice of W, whichever binding is larger; W is about 3.5 bindings, in a
  // whole number of aligned output rows (so that tiles of X and Y rows may start at any row)
  const uint64_t range = std::max<uint64_t>(8 * K * 4, w_step * rb) + 4, y_align = align / std::gcd(align, uint64_t(4));
  const uint32_t N = uint32_t(((range - 4) * 7 / 2 / rb + y_align) / y_align * y_align);
  auto w = make_weights(wt, N, K, 21);
  auto x = random_floats(size_t(M) * K, 22);
  Buffer Wb = upload(w), X = upload(x), Y(ctx(), size_t(M) * N * 4);
  std::vector<float> want(size_t(M) * N);
  ref::matmul(wt, w.data(), x.data(), want.data(), M, N, K);
  struct Restore {  // the kernels are shared by all tests
    Tuning &value, saved;
    ~Restore() { value = saved; }
  } restore{k().tuning, k().tuning};
  k().tuning.max_binding_range = range;
  for (bool rows_kernel : {false, true}) {
    k().tuning.matmul_rows = rows_kernel;
    CommandStream cs(ctx());
    cs.begin();
    op_matmul(cs, k(), wt, Wb, X, Y, M, N, K);
    cs.submit();
    EXPECT_GE(cs.dispatches(), 4u);
    EXPECT_LE(max_abs_diff(download<float>(Y, want.size()), want), matmul_tolerance(K))
        << type_name(wt) << (rows_kernel ? " rows" : " tiled") << " N=" << N;
  }
}

std::string type_param_name(const ::testing::TestParamInfo<GgmlType>& info) { return type_name(info.param); }

#define SNAPVK_WEIGHT_TYPES                                                                                         \
  ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K,   \
                    GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K, \
                    GgmlType::Q5_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS)
INSTANTIATE_TEST_SUITE_P(Weights, KernelMatvec, SNAPVK_WEIGHT_TYPES, type_param_name);
INSTANTIATE_TEST_SUITE_P(Weights, KernelMatmul, SNAPVK_WEIGHT_TYPES, type_param_name);

}  // namespace
}  // namespace snapvk::test
