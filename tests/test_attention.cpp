// Model kernels beyond the matrix products, each against its scalar reference: embedding
// lookup, RoPE, SwiGLU, and K/V storage with prefill and decode attention over a cache laid
// out by a heads table (uneven offsets and retained lengths, as a compacted cache has).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "host/gguf/quant.h"
#include "host/kernels/attention.h"
#include "host/ref/kv_format_ref.h"
#include "host/ref/reference.h"
#include "tests/gpu_fixture.h"

namespace snapvk::test {
namespace {

struct ModelKernel : VkTest {};

TEST_F(ModelKernel, GetRowsDequantizesEveryType) {
  const uint32_t rows_in_table = 37, n = 256, T = 9;
  const std::vector<int32_t> ids = {0, 36, 5, 5, 17, 1, 30, 2, 36};
  for (GgmlType wt : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K,
                      GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K,
                      GgmlType::Q5_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS}) {
    auto f = random_floats(size_t(rows_in_table) * n, 3);
    const uint64_t rb = row_bytes(wt, n);
    std::vector<uint8_t> raw(rb * rows_in_table);
    for (uint32_t r = 0; r < rows_in_table; ++r) quantize_row(wt, f.data() + size_t(r) * n, raw.data() + r * rb, n);
    Buffer table = upload(raw), idb = upload(ids), y(ctx(), size_t(T) * n * 4);
    CommandStream cs(ctx());
    cs.begin();
    op_get_rows(cs, k(), wt, table, idb, y, T, n);
    cs.submit();
    std::vector<float> want(size_t(T) * n);
    ref::get_rows(wt, raw.data(), ids.data(), want.data(), T, n);
    EXPECT_LE(max_abs_diff(download<float>(y, want.size()), want), 1e-6f) << type_name(wt);
  }
}

// GPU angles are fp32 (as llama.cpp computes them): the error grows with the position.
TEST_F(ModelKernel, RopeMatchesReference) {
  const uint32_t T = 7, heads = 3;
  auto factors = random_floats(64, 4, 1.0f, 8.0f);
  Buffer F = upload(factors);
  for (uint32_t hd : {8u, 64u, 128u})
    for (uint32_t n_rot : {hd, hd / 2})
      for (uint32_t mode : {0u, 2u})
        for (uint32_t pos0 : {0u, 1000u})
          for (bool use_factors : {false, true}) {
            const float scale = use_factors ? 1.0f : 0.125f;  // linear scaling (Gemma 3's global layers: 1/8)
            // x alone, then x with a second tensor y of other heads in the same dispatch (q and k)
            for (uint32_t y_heads : {0u, 5u}) {
              auto x = random_floats(size_t(T) * heads * hd, hd + n_rot + mode + pos0);
              auto y = random_floats(size_t(T) * std::max(y_heads, 1u) * hd, hd + n_rot + mode + pos0 + 1);
              Buffer X = upload(x), Y = upload(y);
              CommandStream cs(ctx());
              cs.begin();
              op_rope(cs, k(), X, F, use_factors, T, heads, RopeParams{hd, n_rot, pos0, 10000.0f, mode, scale}, Y,
                      y_heads);
              cs.submit();
              const float* f = use_factors ? factors.data() : nullptr;
              ref::rope(x.data(), T, heads, hd, n_rot, pos0, 10000.0f, mode == 2, f, scale);
              if (y_heads) ref::rope(y.data(), T, y_heads, hd, n_rot, pos0, 10000.0f, mode == 2, f, scale);
              const float tol = 1e-5f + 2e-6f * (pos0 + T);
              EXPECT_LE(max_abs_diff(download<float>(X, x.size()), x), tol)
                  << "hd " << hd << " n_rot " << n_rot << " mode " << mode << " pos0 " << pos0 << " scale " << scale
                  << " y_heads " << y_heads;
              EXPECT_LE(max_abs_diff(download<float>(Y, y.size()), y), y_heads ? tol : 0.0f)  // (unrotated: untouched)
                  << "y: hd " << hd << " n_rot " << n_rot << " mode " << mode << " y_heads " << y_heads;
            }
          }
}

TEST_F(ModelKernel, SwigluMatchesReference) {
  for (uint32_t n : {1u, 7u, 33u, 4099u}) {
    auto g = random_floats(n, 1, -6, 6), u = random_floats(n, 2);
    Buffer G = upload(g), U = upload(u), Y(ctx(), n * 4ull);
    CommandStream cs(ctx());
    cs.begin();
    op_swiglu(cs, k(), G, U, Y, n);
    cs.submit();
    std::vector<float> want(n);
    ref::swiglu(g.data(), u.data(), want.data(), n);
    EXPECT_LE(max_abs_diff(download<float>(Y, n), want), 1e-6f) << n;
  }
}

// Gates up to +-30: the tanh approximation must saturate to 0 and to g, never give NaN.
TEST_F(ModelKernel, GegluMatchesReference) {
  for (uint32_t n : {1u, 7u, 33u, 4099u}) {
    auto g = random_floats(n, 3, -30, 30), u = random_floats(n, 4);
    for (uint32_t i = 0; i < n && i < 4; ++i) g[i] = std::vector<float>{0.0f, -1e30f, 1e30f, 0.5f}[i];
    Buffer G = upload(g), U = upload(u), Y(ctx(), n * 4ull);
    CommandStream cs(ctx());
    cs.begin();
    op_geglu(cs, k(), G, U, Y, n);
    cs.submit();
    std::vector<float> want(n);
    ref::geglu(g.data(), u.data(), want.data(), n);
    const std::vector<float> got = download<float>(Y, n);
    for (uint32_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << i << " of " << n;
      EXPECT_LE(std::fabs(got[i] - want[i]), 1e-5f * std::max(1.0f, std::fabs(want[i]))) << i << " of " << n;
    }
  }
}

TEST_F(ModelKernel, SoftcapMatchesReference) {
  for (uint64_t range : {uint64_t(0), uint64_t(1000)}) {  // 1000: pieces of 250 floats or fewer, as for big logits
    struct Restore {                                      // the kernels are shared by all tests
      uint64_t &value, saved;
      ~Restore() { value = saved; }
    } restore{k().tuning.max_binding_range, k().tuning.max_binding_range};
    k().tuning.max_binding_range = range;
    for (uint32_t n : {1u, 7u, 33u, 4099u}) {
      auto x = random_floats(n, 5, -200, 200);
      Buffer X = upload(x);
      CommandStream cs(ctx());
      cs.begin();
      op_softcap(cs, k(), X, n, 30.0f);
      cs.submit();
      if (range && n > 250) EXPECT_GT(cs.dispatches(), 1u);
      ref::softcap(x.data(), n, 30.0f);
      EXPECT_LE(max_abs_diff(download<float>(X, n), x), 2e-5f) << n << " range " << range;
    }
  }
}

// What a cache of this type returns for stored f32 values.
std::vector<float> stored(KvType t, const float* x, uint32_t hd) {
  std::vector<float> out(x, x + hd);
  if (t == KvType::F16)
    for (auto& v : out) v = fp16_to_fp32(fp32_to_fp16(v));
  if (t == KvType::Q8_0) {
    std::vector<uint8_t> blocks(row_bytes(GgmlType::Q8_0, hd));
    quantize_row(GgmlType::Q8_0, x, blocks.data(), hd);
    dequantize_row(GgmlType::Q8_0, blocks.data(), out.data(), hd);
  }
  return out;
}

// Row `slot` of a downloaded cache of type t, decoded.
std::vector<float> cached(KvType t, const std::vector<uint32_t>& cache, uint32_t slot, uint32_t hd) {
  std::vector<float> out(hd);
  ref::kv_decode_row(t, &cache[size_t(slot) * kv_row_words(t, hd)], hd, out.data());
  return out;
}

struct AttnCase {
  KvType type;  // K's, and V's unless v says otherwise
  uint32_t hd, group;
  std::optional<KvType> v = std::nullopt;
  KvTypes types() const { return {type, v.value_or(type)}; }
};
// "f16_hd128_g2", "q8_0_q4_0_hd64_g2" (K, V): the test's name and its printed parameter
std::string attn_case_name(const AttnCase& c) {
  return std::string(kv_type_name(c.type)) + (c.v ? std::string("_") + kv_type_name(*c.v) : "") + "_hd" +
         std::to_string(c.hd) + "_g" + std::to_string(c.group);
}
void PrintTo(const AttnCase& c, std::ostream* os) { *os << attn_case_name(c); }

class AttentionKernel : public VkTest, public ::testing::WithParamInterface<AttnCase> {};

// kv_store appends T tokens after each head's retained entries; attn_prefill (causal over
// retained + appended) and attn_decode (one more token) match softmax attention on the host.
// pass: keys per prefill pass (0: the op's own choice, one pass here). One type for K and V: the
// host attends over its own rounding of the inputs (stored()), which checks the store too. K and
// V of different types (c.v): over the rows the GPU stored, decoded on the host, so the only
// difference is the order of float operations (tests/test_kv_types.cpp checks every store).
void store_prefill_decode(Context& ctx, Kernels& kern, AttnCase c, bool rows_kernel, uint32_t pass = 0);

// These cases bind each batch's rows of K, V, Q and the output at offsets of whole rows; a device
// whose offset alignment a row does not divide (SNAPVK_DEVICE_LIMITS=minimum, 256 bytes) cannot
// bind them so: skipped there (the forward pass aligns its offsets: the model tests run).
bool rows_bind_at_any_offset(const Context& ctx, const AttnCase& c) {
  const uint64_t align = std::max<uint64_t>(4, ctx.info().min_storage_buffer_offset_alignment);
  const uint64_t krow = uint64_t(c.hd) * 4, qrow = krow * c.group;  // n_kv is 1 or more
  return krow % align == 0 && qrow % align == 0;
}

TEST_P(AttentionKernel, StoreThenPrefillAndDecodeMatchReference) {
  if (!rows_bind_at_any_offset(ctx(), GetParam())) GTEST_SKIP() << "rows not at offsets this device binds";
  // both prefill kernels, whatever the device: the GPU tiling and the CPU row variant
  store_prefill_decode(ctx(), k(), GetParam(), false);
  if (GetParam().hd % 4 == 0) store_prefill_decode(ctx(), k(), GetParam(), true);
}

template <class T>
Buffer up(Context& ctx, const std::vector<T>& v) {
  Buffer b(ctx, (v.size() * sizeof(T) + 3) / 4 * 4);
  b.upload(v.data(), v.size() * sizeof(T));
  return b;
}

void store_prefill_decode(Context& ctx, Kernels& kern, AttnCase c, bool rows_kernel, uint32_t pass) {
  const uint32_t n_kv = 3, n_head = n_kv * c.group, hd = c.hd, T = 21;
  const std::vector<uint32_t> offset = {0, 300, 620}, base = {5, 190, 0};
  const uint32_t slots = 900;
  AttentionKernels ak(ctx, kern.tuning, hd, c.group);
  ak.use_prefill_rows = rows_kernel;
  ak.prefill_pass = pass;
  const KvTypes types = c.types();
  const uint32_t kwords = kv_row_words(types.k, hd), vwords = kv_row_words(types.v, hd);
  Buffer K(ctx, uint64_t(slots) * kwords * 4), V(ctx, uint64_t(slots) * vwords * 4);
  std::vector<uint32_t> t0(2 * n_kv), t1(2 * n_kv);
  for (uint32_t h = 0; h < n_kv; ++h) t0[2 * h] = t1[2 * h] = offset[h], t1[2 * h + 1] = base[h];
  Buffer heads_empty = up(ctx, t0), heads = up(ctx, t1);

  // retained entries: written as if appended to empty heads, then declared retained
  const uint32_t R = 190;
  auto rk = random_floats(size_t(R) * n_kv * hd, 1), rv = random_floats(size_t(R) * n_kv * hd, 2);
  auto nk = random_floats(size_t(T + 1) * n_kv * hd, 3), nv = random_floats(size_t(T + 1) * n_kv * hd, 4);
  auto q = random_floats(size_t(T + 1) * n_head * hd, 5, -2, 2);
  Buffer RK = up(ctx, rk), RV = up(ctx, rv), NK = up(ctx, nk), NV = up(ctx, nv), Q = up(ctx, q);
  Buffer O(ctx, size_t(T) * n_head * hd * 4), O1(ctx, size_t(n_head) * hd * 4);
  Buffer part(ctx, std::max(attn_partial_floats(ak, n_head, slots), attn_prefill_state_floats(ak, T, n_head, 211)) * 4);
  const float scale = 1.0f / std::sqrt(float(hd));
  const uint64_t qrow = uint64_t(n_head) * hd * 4, krow = uint64_t(n_kv) * hd * 4;

  CommandStream cs(ctx);
  cs.begin();
  op_kv_store(cs, kern, ak, types.k, RK, K, heads_empty, R, n_kv, 0);
  op_kv_store(cs, kern, ak, types.v, RV, V, heads_empty, R, n_kv, 0);
  cs.barrier();
  op_kv_store(cs, kern, ak, types.k, BufferRange(NK, 0, T * krow), K, heads, T, n_kv, 0);
  op_kv_store(cs, kern, ak, types.v, BufferRange(NV, 0, T * krow), V, heads, T, n_kv, 0);
  cs.barrier();
  op_attn_prefill(cs, kern, ak, types, BufferRange(Q, 0, T * qrow), K, V, heads, part, O, T, n_head, n_kv, 0,
                  base[1] + T, scale);  // 211 keys at most
  cs.barrier();
  op_kv_store(cs, kern, ak, types.k, BufferRange(NK, T * krow, krow), K, heads, 1, n_kv, T);
  op_kv_store(cs, kern, ak, types.v, BufferRange(NV, T * krow, krow), V, heads, 1, n_kv, T);
  cs.barrier();
  op_attn_decode(cs, kern, ak, types, BufferRange(Q, T * qrow, qrow), K, V, heads, part, O1, n_head, n_kv,
                 base[1] + T + 1, T + 1, scale);
  cs.submit();

  std::vector<float> got(size_t(T) * n_head * hd), got1(size_t(n_head) * hd);
  O.download(got.data(), got.size() * 4);
  O1.download(got1.data(), got1.size() * 4);
  std::vector<uint32_t> kc(size_t(slots) * kwords), vc(size_t(slots) * vwords);
  K.download(kc.data(), kc.size() * 4);
  V.download(vc.data(), vc.size() * 4);
  // row j of head kvh as the host attends to it: retained rows, then the appended ones
  auto row = [&](const std::vector<float>& retained, const std::vector<float>& appended, KvType t,
                 const std::vector<uint32_t>& cache, uint32_t kvh, uint32_t j) {
    if (c.v) return cached(t, cache, offset[kvh] + j, hd);
    const float* x = j < base[kvh] ? &retained[(size_t(j) * n_kv + kvh) * hd]
                                   : &appended[(size_t(j - base[kvh]) * n_kv + kvh) * hd];
    return stored(t, x, hd);
  };
  std::vector<float> want(hd);
  for (uint32_t h = 0; h < n_head; ++h) {
    const uint32_t kvh = h / c.group;
    std::vector<std::vector<float>> keys, vals;
    for (uint32_t j = 0; j < base[kvh]; ++j) {
      keys.push_back(row(rk, nk, types.k, kc, kvh, j));
      vals.push_back(row(rv, nv, types.v, vc, kvh, j));
    }
    for (uint32_t t = 0; t <= T; ++t) {
      keys.push_back(row(rk, nk, types.k, kc, kvh, base[kvh] + t));
      vals.push_back(row(rv, nv, types.v, vc, kvh, base[kvh] + t));
      std::vector<const float*> kp, vp;
      for (size_t j = 0; j < keys.size(); ++j) kp.push_back(keys[j].data()), vp.push_back(vals[j].data());
      ref::attend(&q[(size_t(t) * n_head + h) * hd], kp.data(), vp.data(), keys.size(), hd, scale, want.data());
      const float* g = t < T ? &got[(size_t(t) * n_head + h) * hd] : &got1[size_t(h) * hd];
      // q8_0 rounded on the host: the GPU's 1/scale may round a value on a .5 boundary the other way
      const float tol = c.type == KvType::Q8_0 && !c.v ? 5e-4f : 2e-5f;
      for (uint32_t d = 0; d < hd; ++d)
        ASSERT_NEAR(g[d], want[d], tol) << attn_case_name(c) << (rows_kernel ? " rows" : " tiled") << " head " << h
                                        << " token " << t << " dim " << d;
    }
  }
}

// A sliding-window layer: a ring of W + B - 1 slots per head, positions stored at p % ring in
// batches of B (the last one shorter), each query attending to the W positions up to its own;
// then decode steps over the ring. Both prefill kernels.
void sliding_window_ring(Context& ctx, Kernels& kern, AttnCase c, bool rows_kernel, uint32_t pass = 0) {
  const uint32_t n_kv = 2, n_head = n_kv * c.group, hd = c.hd, W = 6, B = 5, N = 23, n_decode = 3;
  const uint32_t ring = W + B - 1;
  AttentionKernels ak(ctx, kern.tuning, hd, c.group);
  ak.use_prefill_rows = rows_kernel;
  ak.prefill_pass = pass;
  const uint32_t words = kv_row_words(c.type, hd);
  Buffer K(ctx, uint64_t(n_kv) * ring * words * 4), V(ctx, uint64_t(n_kv) * ring * words * 4);
  Buffer heads = up(ctx, std::vector<uint32_t>{0, 0, ring, 0});
  const uint32_t total = N + n_decode;
  auto nk = random_floats(size_t(total) * n_kv * hd, 6), nv = random_floats(size_t(total) * n_kv * hd, 7);
  auto q = random_floats(size_t(total) * n_head * hd, 8, -2, 2);
  Buffer NK = up(ctx, nk), NV = up(ctx, nv), Q = up(ctx, q);
  Buffer O(ctx, size_t(total) * n_head * hd * 4);
  Buffer part(ctx, std::max(attn_partial_floats(ak, n_head, W), attn_prefill_state_floats(ak, B, n_head, W)) * 4);
  const float scale = 0.3f;
  const uint64_t qrow = uint64_t(n_head) * hd * 4, krow = uint64_t(n_kv) * hd * 4;
  const KvWindow w{W, ring};
  CommandStream cs(ctx);
  cs.begin();
  std::vector<std::pair<uint32_t, uint32_t>> steps;  // (first position, tokens): prefill batches, then decode
  for (uint32_t p0 = 0; p0 < N; p0 += B) steps.push_back({p0, std::min(B, N - p0)});
  for (uint32_t p = N; p < total; ++p) steps.push_back({p, 1});
  for (auto [p0, T] : steps) {
    op_kv_store(cs, kern, ak, c.type, BufferRange(NK, p0 * krow, T * krow), K, heads, T, n_kv, p0, ring);
    op_kv_store(cs, kern, ak, c.type, BufferRange(NV, p0 * krow, T * krow), V, heads, T, n_kv, p0, ring);
    cs.barrier();
    if (p0 < N)
      op_attn_prefill(cs, kern, ak, {c.type, c.type}, BufferRange(Q, p0 * qrow, T * qrow), K, V, heads, part,
                      BufferRange(O, p0 * qrow, T * qrow), T, n_head, n_kv, p0, std::min(p0 + T, W), scale, w);
    else
      op_attn_decode(cs, kern, ak, {c.type, c.type}, BufferRange(Q, p0 * qrow, qrow), K, V, heads, part,
                     BufferRange(O, p0 * qrow, qrow), n_head, n_kv, std::min(p0 + 1, W), p0 + 1, scale, w);
    cs.barrier();
  }
  cs.submit();
  std::vector<float> got(size_t(total) * n_head * hd), want(hd);
  O.download(got.data(), got.size() * 4);
  for (uint32_t h = 0; h < n_head; ++h) {
    const uint32_t kvh = h / c.group;
    for (uint32_t p = 0; p < total; ++p) {
      std::vector<std::vector<float>> keys, vals;
      for (uint32_t j = p + 1 > W ? p + 1 - W : 0; j <= p; ++j) {
        keys.push_back(stored(c.type, &nk[(size_t(j) * n_kv + kvh) * hd], hd));
        vals.push_back(stored(c.type, &nv[(size_t(j) * n_kv + kvh) * hd], hd));
      }
      std::vector<const float*> kp, vp;
      for (size_t j = 0; j < keys.size(); ++j) kp.push_back(keys[j].data()), vp.push_back(vals[j].data());
      ref::attend(&q[(size_t(p) * n_head + h) * hd], kp.data(), vp.data(), keys.size(), hd, scale, want.data());
      const float tol = c.type == KvType::Q8_0 ? 5e-4f : 2e-5f;
      for (uint32_t d = 0; d < hd; ++d)
        ASSERT_NEAR(got[(size_t(p) * n_head + h) * hd + d], want[d], tol)
            << kv_type_name(c.type) << (rows_kernel ? " rows" : " tiled") << " head " << h << " position " << p;
    }
  }
}

TEST_P(AttentionKernel, SlidingWindowRingMatchesReference) {
  if (!rows_bind_at_any_offset(ctx(), GetParam())) GTEST_SKIP() << "rows not at offsets this device binds";
  sliding_window_ring(ctx(), k(), GetParam(), false);
  if (GetParam().hd % 4 == 0) sliding_window_ring(ctx(), k(), GetParam(), true);
}

// Rows walked in passes that carry their softmax from one dispatch to the next, as rows longer
// than one invocation may loop over are (host/kernels/loop_bounds.h): a pass of one key block
// (tiled) or of three keys (rows), over retained and appended keys and over a window's ring.
TEST_P(AttentionKernel, PrefillInPassesMatchesReference) {
  if (!rows_bind_at_any_offset(ctx(), GetParam())) GTEST_SKIP() << "rows not at offsets this device binds";
  store_prefill_decode(ctx(), k(), GetParam(), false, 16);
  sliding_window_ring(ctx(), k(), GetParam(), false, 16);
  if (GetParam().hd % 4 == 0) {
    store_prefill_decode(ctx(), k(), GetParam(), true, 3);
    sliding_window_ring(ctx(), k(), GetParam(), true, 3);
  }
}

// A long causal prefill at Gemma 3 270M's attention shape (head_dim 256, 4 query heads on 1 KV
// head): N positions in batches of B against softmax attention on the host. llvmpipe ends every
// loop of an invocation once 65535 loop iterations have run in it; the row kernel's head_dim
// loops used to count against that per key, so at head_dim 256 rows past ~430 keys were left
// unwritten (zeros) and Gemma 3 answered garbage to prompts over ~440 tokens.
void long_prefill(Context& ctx, Kernels& kern, KvType type, uint32_t N, uint32_t B, bool rows_kernel) {
  const uint32_t n_kv = 1, group = 4, n_head = n_kv * group, hd = 256;
  AttentionKernels ak(ctx, kern.tuning, hd, group);
  ak.use_prefill_rows = rows_kernel;
  const uint32_t words = kv_row_words(type, hd);
  Buffer K(ctx, uint64_t(n_kv) * N * words * 4), V(ctx, uint64_t(n_kv) * N * words * 4);
  Buffer heads = up(ctx, std::vector<uint32_t>{0, 0});
  auto nk = random_floats(size_t(N) * n_kv * hd, 11), nv = random_floats(size_t(N) * n_kv * hd, 12);
  auto q = random_floats(size_t(N) * n_head * hd, 13, -2, 2);
  Buffer NK = up(ctx, nk), NV = up(ctx, nv), Q = up(ctx, q);
  Buffer O(ctx, size_t(N) * n_head * hd * 4), part(ctx, 4);  // one pass: no state
  const float scale = 1.0f / std::sqrt(float(hd));
  const uint64_t qrow = uint64_t(n_head) * hd * 4, krow = uint64_t(n_kv) * hd * 4;
  CommandStream cs(ctx);
  cs.begin();
  for (uint32_t p0 = 0; p0 < N; p0 += B) {
    const uint32_t T = std::min(B, N - p0);
    op_kv_store(cs, kern, ak, type, BufferRange(NK, p0 * krow, T * krow), K, heads, T, n_kv, p0);
    op_kv_store(cs, kern, ak, type, BufferRange(NV, p0 * krow, T * krow), V, heads, T, n_kv, p0);
    cs.barrier();
    op_attn_prefill(cs, kern, ak, {type, type}, BufferRange(Q, p0 * qrow, T * qrow), K, V, heads, part,
                    BufferRange(O, p0 * qrow, T * qrow), T, n_head, n_kv, p0, p0 + T, scale);
    cs.barrier();
  }
  cs.submit();
  std::vector<float> got(size_t(N) * n_head * hd), want(hd);
  O.download(got.data(), got.size() * 4);
  std::vector<std::vector<float>> keys, vals;
  std::vector<const float*> kp, vp;
  for (uint32_t j = 0; j < N; ++j) {
    keys.push_back(stored(type, &nk[size_t(j) * n_kv * hd], hd));
    vals.push_back(stored(type, &nv[size_t(j) * n_kv * hd], hd));
  }
  for (uint32_t j = 0; j < N; ++j) kp.push_back(keys[j].data()), vp.push_back(vals[j].data());
  uint32_t bad = 0, first_bad = N;
  float worst = 0;
  for (uint32_t p = 0; p < N; ++p)
    for (uint32_t h = 0; h < n_head; ++h) {
      ref::attend(&q[(size_t(p) * n_head + h) * hd], kp.data(), vp.data(), p + 1, hd, scale, want.data());
      float e = 0;
      for (uint32_t d = 0; d < hd; ++d) e = std::max(e, std::abs(got[(size_t(p) * n_head + h) * hd + d] - want[d]));
      worst = std::max(worst, e);
      if (e > 5e-5f) ++bad, first_bad = std::min(first_bad, p);
    }
  EXPECT_EQ(bad, 0u) << kv_type_name(type) << (rows_kernel ? " rows" : " tiled") << " batch " << B
                     << ": first wrong position " << first_bad << ", largest error " << worst;
}

TEST_F(ModelKernel, LongPrefillAtHeadDim256MatchesReference) {
  long_prefill(ctx(), k(), KvType::F16, 520, 520, true);  // one batch: rows up to 520 keys
  long_prefill(ctx(), k(), KvType::F32, 520, 64, true);   // batches of 64 after what is cached
  long_prefill(ctx(), k(), KvType::F16, 520, 128, false);
}

// The last B queries of an N-key causal prefill (one KV head, GQA group 2) against softmax
// attention on the host. llvmpipe ends every loop of an invocation once 65535 loop iterations
// have run in it (docs/reliability.md, "Loop limits"), silently: a row walking more keys than
// that in one invocation was cut short. Values grow with the position, so keys left out move
// the output well past the tolerance.
void prefill_tail(Context& ctx, Kernels& kern, KvType type, uint32_t hd, uint32_t N, uint32_t B, bool rows_kernel) {
  const uint32_t n_kv = 1, group = 2, n_head = n_kv * group;
  AttentionKernels ak(ctx, kern.tuning, hd, group);
  ak.use_prefill_rows = rows_kernel;
  const uint32_t words = kv_row_words(type, hd);
  Buffer K(ctx, uint64_t(N) * words * 4), V(ctx, uint64_t(N) * words * 4);
  Buffer heads = up(ctx, std::vector<uint32_t>{0, 0});
  auto nk = random_floats(size_t(N) * hd, 21), nv = random_floats(size_t(N) * hd, 22);
  for (uint32_t j = 0; j < N; ++j)
    for (uint32_t d = 0; d < hd; ++d) nv[size_t(j) * hd + d] += 4.0f * float(j) / float(N);
  auto q = random_floats(size_t(B) * n_head * hd, 23, -2, 2);
  Buffer NK = up(ctx, nk), NV = up(ctx, nv), Q = up(ctx, q);
  Buffer O(ctx, size_t(B) * n_head * hd * 4);
  Buffer part(ctx, std::max<uint64_t>(1, attn_prefill_state_floats(ak, B, n_head, N)) * 4);
  const float scale = 1.0f / std::sqrt(float(hd));
  CommandStream cs(ctx);
  cs.begin();
  op_kv_store(cs, kern, ak, type, NK, K, heads, N, n_kv, 0);
  op_kv_store(cs, kern, ak, type, NV, V, heads, N, n_kv, 0);
  cs.barrier();
  op_attn_prefill(cs, kern, ak, {type, type}, Q, K, V, heads, part, O, B, n_head, n_kv, N - B, N, scale);
  cs.submit();
  const auto got = [&] {
    std::vector<float> g(size_t(B) * n_head * hd);
    O.download(g.data(), g.size() * 4);
    return g;
  }();
  std::vector<std::vector<float>> keys, vals;
  std::vector<const float*> kp, vp;
  for (uint32_t j = 0; j < N; ++j) {
    keys.push_back(stored(type, &nk[size_t(j) * hd], hd));
    vals.push_back(stored(type, &nv[size_t(j) * hd], hd));
  }
  for (uint32_t j = 0; j < N; ++j) kp.push_back(keys[j].data()), vp.push_back(vals[j].data());
  std::vector<float> want(hd);
  float worst = 0;
  for (uint32_t t = 0; t < B; ++t)
    for (uint32_t h = 0; h < n_head; ++h) {
      ref::attend(&q[(size_t(t) * n_head + h) * hd], kp.data(), vp.data(), N - B + t + 1, hd, scale, want.data());
      for (uint32_t d = 0; d < hd; ++d)
        worst = std::max(worst, std::abs(got[(size_t(t) * n_head + h) * hd + d] - want[d]));
    }
  EXPECT_LE(worst, 1e-3f) << kv_type_name(type) << (rows_kernel ? " rows" : " tiled") << " hd " << hd << ": " << N
                          << " keys";
}

// Each prefill kernel past the keys one invocation could walk before the fix: the row kernel
// (lavapipe's) one back-edge per key, so past 65535 keys; the tiled kernel (GPUs, and lavapipe
// when head_dim % 4 != 0) about 580 per block of 16 keys at head_dim 256 (its rolled head_dim
// loop twice, and the loads of K and V), so past ~1,800 keys.
TEST_F(ModelKernel, PrefillRowsPastTheLoopLimitMatchReference) {
  prefill_tail(ctx(), k(), KvType::F32, 8, 70000, 8, true);
  prefill_tail(ctx(), k(), KvType::F16, 256, 8000, 16, false);  // on lavapipe in two passes now
}

// K and V of different types: every type on one side of a pair, each prefill kernel and decode;
// one pair's K and V both rotated, one's V alone.
struct AttentionKernelPairs : VkTest {};

TEST_F(AttentionKernelPairs, MixedKvTypesMatchReference) {
  const AttnCase cases[] = {{KvType::Q8_0, 64, 2, KvType::Q4_0}, {KvType::HQ4, 128, 1, KvType::HQ3},
                            {KvType::F16, 96, 2, KvType::Q5_1},  {KvType::BF16, 256, 4, KvType::IQ4_NL},
                            {KvType::Q4_1, 32, 1, KvType::F32},  {KvType::Q5_0, 64, 2, KvType::HQ4}};
  for (const AttnCase& c : cases) {
    if (!rows_bind_at_any_offset(ctx(), c)) continue;  // as the single-type cases skip there
    store_prefill_decode(ctx(), k(), c, false);
    if (HasFatalFailure()) return;
    if (c.hd % 4 == 0) store_prefill_decode(ctx(), k(), c, true);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(KvTypes, AttentionKernel,
                         ::testing::Values(AttnCase{KvType::F32, 8, 2}, AttnCase{KvType::F16, 8, 1},
                                           AttnCase{KvType::F32, 64, 4}, AttnCase{KvType::F16, 128, 2},
                                           AttnCase{KvType::Q8_0, 64, 8}, AttnCase{KvType::Q8_0, 96, 1},
                                           AttnCase{KvType::F16, 256, 1}),
                         [](const auto& info) { return attn_case_name(info.param); });

}  // namespace
}  // namespace snapvk::test
