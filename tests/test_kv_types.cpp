// The KV-cache storage types (shaders/kv_format.h): the CPU reference's round trip and rotation
// (host/ref/kv_format_ref.h), then the GPU's store and rotation against it. Attention over pairs
// of types is test_attention.cpp's (AttentionKernelPairs).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#include "host/gguf/quant.h"
#include "host/kernels/attention.h"
#include "host/ref/kv_format_ref.h"
#include "snapvk_limits.h"
#include "tests/gpu_fixture.h"

namespace snapvk::test {
namespace {

constexpr KvType kAllTypes[] = {KvType::F32,    KvType::F16,  KvType::BF16, KvType::Q8_0, KvType::Q4_0, KvType::Q4_1,
                                KvType::IQ4_NL, KvType::Q5_0, KvType::Q5_1, KvType::HQ4,  KvType::HQ3};

bool supported(KvType t, uint32_t hd) { return kv_type_unsupported(t, hd).empty(); }
bool refits(KvType t) { return t == KvType::IQ4_NL || t == KvType::HQ4 || t == KvType::HQ3; }

// Unit Gaussian values (Box-Muller), deterministic like random_floats.
std::vector<float> gaussian(size_t n, uint32_t seed) {
  const std::vector<float> u = random_floats(2 * n, seed, 0.0f, 1.0f);
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i)
    g[i] = float(std::sqrt(-2.0 * std::log(1.0 - u[2 * i])) * std::cos(6.283185307179586 * u[2 * i + 1]));
  return g;
}

// Rows like real K vectors: mostly Gaussian, with the same few channels of every row far larger,
// so that some of a row's blocks hold an outlier and the rest do not.
std::vector<float> with_outlier_channels(std::vector<float> x, uint32_t hd) {
  for (size_t r = 0; r < x.size() / hd; ++r) {
    x[r * hd + 3] += 12.0f;
    x[r * hd + 17 % hd] -= 15.0f;
    x[r * hd + hd - 5] += 10.0f;  // head_dim 8 and up
  }
  return x;
}

std::vector<float> round_trip(KvType t, const float* x, uint32_t hd) {
  std::vector<uint32_t> words(kv_row_words(t, hd));
  ref::kv_encode_row(t, x, hd, words.data());
  std::vector<float> out(hd);
  ref::kv_decode_row(t, words.data(), hd, out.data());
  return out;
}

// sqrt(sum (y - x)^2 / sum x^2)
double rms_error(const std::vector<float>& y, const float* x) {
  double e = 0, s = 0;
  for (size_t i = 0; i < y.size(); ++i) e += (double(y[i]) - x[i]) * (double(y[i]) - x[i]), s += double(x[i]) * x[i];
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

// The RMS error of a row's round trip relative to its RMS, at most, on Gaussian and uniform rows
// and on rows with outliers (one channel 30 sigma out, unrotated: the rotated types' worst
// case): about 1.3x the worst of test_rows' measured, or the format's own bound (f16, bf16:
// 2^-11, 2^-8 of every value). Measured worst, typical / outliers: q8_0 0.0073 / 0.0124, q4_0
// 0.104 / 0.180, q4_1 0.114 / 0.148, iq4_nl 0.115 / 0.148, q5_0 0.055 / 0.104, q5_1 0.055 /
// 0.065, hq4 0.094 / 0.168, hq3 0.199 / 0.398. A broken layout (codes in the wrong place, the
// scale of another block) errs by about 1.
double rms_bound(KvType t, bool outliers) {
  switch (t) {
    case KvType::F32: return 0;
    case KvType::F16: return 5e-4;
    case KvType::BF16: return 4e-3;
    case KvType::Q8_0: return outliers ? 0.017 : 0.01;
    case KvType::Q4_0: return outliers ? 0.24 : 0.14;
    case KvType::Q4_1: return outliers ? 0.2 : 0.15;
    case KvType::IQ4_NL: return outliers ? 0.2 : 0.15;
    case KvType::Q5_0: return outliers ? 0.14 : 0.075;
    case KvType::Q5_1: return outliers ? 0.09 : 0.075;
    case KvType::HQ4: return outliers ? 0.22 : 0.13;
    case KvType::HQ3: return outliers ? 0.52 : 0.27;
  }
  return 0;
}

// The largest error of one value of block `x` (32 values; a whole row for f16 and bf16) from
// the format's arithmetic: half a step, a whole one where q4_0 / q5_0 clamp the side opposite the
// largest value, plus the f16 rounding of the scale and offset times the codes. None for the
// types whose scale is refitted (bounded by rms_bound alone).
float value_bound(KvType t, const float* x, uint32_t i, uint32_t n) {
  float amax = 0, mn = x[0], mx = x[0];
  for (uint32_t j = 0; j < n; ++j)
    amax = std::max(amax, std::fabs(x[j])), mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
  const float f16_rel = 1.0f / 1024;  // a scale's f16 rounding, relative (one ulp, twice the need)
  switch (t) {
    case KvType::F32: return 0;
    case KvType::F16: return std::max(std::fabs(x[i]) / 2048, 0x1p-25f);  // half an ulp; subnormal halves
    case KvType::BF16: return std::fabs(x[i]) / 256;
    case KvType::Q8_0: return amax / 127 * (0.5f + 127 * f16_rel);
    case KvType::Q4_0: return amax / 8 * (1 + 8 * f16_rel);
    case KvType::Q5_0: return amax / 16 * (1 + 16 * f16_rel);
    case KvType::Q4_1: return (mx - mn) / 15 * 0.5f + (std::fabs(mn) + (mx - mn)) * f16_rel;
    case KvType::Q5_1: return (mx - mn) / 31 * 0.5f + (std::fabs(mn) + (mx - mn)) * f16_rel;
    default: return INFINITY;
  }
}

// Rows of head_dim hd to round-trip: Gaussian, uniform, then (from kFirstOutlierRow) one outlier
// channel, outlier channels, all zero.
constexpr size_t kFirstOutlierRow = 9;
std::vector<std::vector<float>> test_rows(uint32_t hd) {
  std::vector<std::vector<float>> rows;
  for (uint32_t s = 0; s < 6; ++s) rows.push_back(gaussian(hd, 100 * hd + s));
  for (uint32_t s = 0; s < 3; ++s) rows.push_back(random_floats(hd, 200 * hd + s, -1.0f, 1.0f));
  rows.push_back(gaussian(hd, 300 * hd));
  rows.back()[5 % hd] = 30.0f;
  rows.push_back(with_outlier_channels(gaussian(hd, 400 * hd), hd));
  rows.push_back(std::vector<float>(hd, 0.0f));
  return rows;
}

TEST(KvFormat, EncodeDecodeRoundTripsWithinEachTypesError) {
  for (KvType t : kAllTypes)
    for (uint32_t hd : {8u, 32u, 64u, 96u, 128u, 256u}) {
      if (!supported(t, hd)) continue;
      const auto rows = test_rows(hd);
      for (size_t r = 0; r < rows.size(); ++r) {
        const std::vector<float>& x = rows[r];
        const std::vector<float> y = round_trip(t, x.data(), hd);
        const uint32_t n = t == KvType::F16 || t == KvType::BF16 || t == KvType::F32 ? hd : 32;
        for (uint32_t i = 0; i < hd; ++i) {
          const float* block = x.data() + i / n * n;
          ASSERT_LE(std::fabs(y[i] - x[i]), value_bound(t, block, i % n, n))
              << kv_type_name(t) << " hd " << hd << " row " << r << " value " << i << ": " << x[i] << " -> " << y[i];
        }
        EXPECT_LE(rms_error(y, x.data()), rms_bound(t, r >= kFirstOutlierRow))
            << kv_type_name(t) << " hd " << hd << " row " << r;
      }
    }
}

TEST(KvFormat, RotationInvertsPreservesDotsAndSpreadsOutliers) {
  for (uint32_t hd : {8u, 32u, 64u, 96u, 128u, 256u}) {
    const uint32_t n = hd & (~hd + 1);
    std::vector<float> x = gaussian(hd, hd), y = random_floats(hd, hd + 1);
    std::vector<float> rx = x, ry = y;
    ref::kv_rotate(rx.data(), hd, false);
    ref::kv_rotate(ry.data(), hd, false);
    double dot = 0, rdot = 0, norm = 0, rnorm = 0;
    for (uint32_t i = 0; i < hd; ++i) {
      dot += double(x[i]) * y[i], rdot += double(rx[i]) * ry[i];
      norm += double(x[i]) * x[i], rnorm += double(rx[i]) * rx[i];
    }
    EXPECT_NEAR(rdot, dot, 1e-5 * std::sqrt(norm * hd / 3.0)) << hd;
    EXPECT_NEAR(rnorm, norm, 1e-5 * norm) << hd;
    std::vector<float> back = rx;
    ref::kv_rotate(back.data(), hd, true);
    for (uint32_t i = 0; i < hd; ++i) ASSERT_NEAR(back[i], x[i], 1e-5f) << "hd " << hd << " value " << i;

    // a basis vector: column j of H S / sqrt(N) within its block, zero outside
    const uint32_t j = hd - 3;
    std::vector<float> e(hd, 0.0f);
    e[j] = 1.0f;
    ref::kv_rotate(e.data(), hd, false);
    for (uint32_t i = 0; i < hd; ++i) {
      const bool same_block = i / n == j / n;
      const int h = std::popcount((i % n) & (j % n)) % 2 ? -1 : 1, s = SNAPVK_KV_ROT_SIGN(j % n) ? -1 : 1;
      ASSERT_NEAR(e[i], same_block ? h * s / std::sqrt(float(n)) : 0.0f, 1e-6f) << "hd " << hd << " value " << i;
    }

    // one channel 30 sigma out: spread over its block, the rotated row's largest value is the
    // outlier's 1/sqrt(N) plus Gaussian tails
    std::vector<float> o = gaussian(hd, 7 * hd);
    o[1] = 30.0f;
    ref::kv_rotate(o.data(), hd, false);
    float omax = 0;
    for (float v : o) omax = std::max(omax, std::fabs(v));
    EXPECT_LT(omax, 30.0f / std::sqrt(float(n)) + 4.5f) << hd;
    if (n >= 32) {
      EXPECT_LT(omax, 0.5f * 30.0f) << hd;
    }

    // what every channel shares (a constant offset) spreads too: the sign flips are far from
    // every row of H (SNAPVK_KV_ROT_SIGN), which a pattern close to one would fold back into a
    // coordinate (the first hash tried gave 5x the offset at N = 64)
    if (n >= 16) {
      std::vector<float> c(hd, 1.0f);
      ref::kv_rotate(c.data(), hd, false);
      float cmax = 0;
      for (float v : c) cmax = std::max(cmax, std::fabs(v));
      EXPECT_LE(cmax, 1.5f) << hd;
    }
  }
}

// The rotated types on rows with outlier channels (as real K vectors have): rotated, stored,
// read and rotated back, hq4's error is about half q4_0's at the same 4.5 bits, and hq3's at 3.5
// bits about q4_0's, where on Gaussian rows it is 1.9x (0.161 against 0.086: a bit less per
// value). Measured, q4_0 / hq4 / hq3 / hq3 unrotated: head_dim 64 0.160 / 0.076 / 0.147 / 0.289,
// 128 0.150 / 0.076 / 0.152 / 0.274, 256 0.142 / 0.077 / 0.154 / 0.261 (three outlier channels
// touch fewer of its blocks).
TEST(KvFormat, RotationMakesLowBitsBetterOnOutlierRows) {
  for (uint32_t hd : {64u, 128u, 256u}) {
    const uint32_t rows = 64;
    const std::vector<float> x = with_outlier_channels(gaussian(size_t(rows) * hd, 5 * hd), hd);
    auto error = [&](KvType t, bool rotate) {
      double e = 0, s = 0;
      for (uint32_t r = 0; r < rows; ++r) {
        std::vector<float> v(x.begin() + r * hd, x.begin() + (r + 1) * hd);
        if (rotate) ref::kv_rotate(v.data(), hd, false);
        std::vector<float> y = round_trip(t, v.data(), hd);
        if (rotate) ref::kv_rotate(y.data(), hd, true);
        for (uint32_t i = 0; i < hd; ++i) {
          const double d = double(y[i]) - x[r * hd + i];
          e += d * d, s += double(x[r * hd + i]) * x[r * hd + i];
        }
      }
      return std::sqrt(e / s);
    };
    const double q4_0 = error(KvType::Q4_0, false), hq4 = error(KvType::HQ4, true), hq3 = error(KvType::HQ3, true);
    EXPECT_LT(hq4, 0.65 * q4_0) << "hd " << hd << ": hq4 " << hq4 << ", q4_0 " << q4_0;
    EXPECT_LT(hq3, 1.25 * q4_0) << "hd " << hd << ": hq3 " << hq3 << ", q4_0 " << q4_0;
    EXPECT_LT(hq3, 0.7 * error(KvType::HQ3, false)) << "hd " << hd << ": rotating hq3's rows";
  }
}

struct KvStoreKernel : VkTest {};

// What `got` (the GPU's row) may differ from `want` (the reference's) by: nothing for f32 and
// bf16 (integer arithmetic); an ulp of a half for f16 (packHalf2x16's rounding is the driver's);
// for the block types a code one grid step over where a value sits on a rounding boundary (the
// device's division and square root may round otherwise: GLSL allows 2.5 ulp, and glslc turns
// x / 127.0 into x * (1 / 127.0)), and a scale an f16 ulp apart, or a refitted one a few percent
// apart where a code moved. Counts the codes that moved into `moved`.
void expect_same_row(KvType t, uint32_t hd, const uint32_t* got, const uint32_t* want, const std::string& where,
                     size_t& moved) {
  const uint32_t words = kv_row_words(t, hd);
  if (t == KvType::F32 || t == KvType::BF16) {
    for (uint32_t w = 0; w < words; ++w) ASSERT_EQ(got[w], want[w]) << where << " word " << w;
    return;
  }
  if (t == KvType::F16) {
    for (uint32_t i = 0; i < hd; ++i) {
      const int a = int(got[i / 2] >> (16 * (i % 2)) & 0xFFFF), b = int(want[i / 2] >> (16 * (i % 2)) & 0xFFFF);
      ASSERT_LE(std::abs(a - b), 1) << where << " value " << i;
    }
    return;
  }
  const ref::KvRowFields g = ref::kv_row_fields(t, got, hd), r = ref::kv_row_fields(t, want, hd);
  for (uint32_t b = 0; b < hd / 32; ++b) {
    uint32_t block_moved = 0;
    for (uint32_t i = 32 * b; i < 32 * b + 32; ++i)
      if (g.q[i] != r.q[i]) {
        ++block_moved;
        ASSERT_EQ(std::abs(ref::kv_code_rank(t, g.q[i]) - ref::kv_code_rank(t, r.q[i])), 1)
            << where << " value " << i << ": code " << g.q[i] << ", reference " << r.q[i];
      }
    moved += block_moved;
    const float gd = fp16_to_fp32(g.d[b]), rd = fp16_to_fp32(r.d[b]);
    if (block_moved && refits(t))
      EXPECT_LE(std::fabs(gd - rd), 0.1f * std::fabs(rd)) << where << " block " << b;
    else
      EXPECT_LE(std::abs(int(g.d[b]) - int(r.d[b])), 1) << where << " block " << b << ": scale " << gd << ", " << rd;
    EXPECT_LE(std::abs(int(g.m[b]) - int(r.m[b])), 1) << where << " block " << b << ": offset";
  }
}

// kv_store's rows, T tokens of n_kv heads after uneven offsets and retained entries, against
// the reference's encoding word by word; the cache's other rows keep what was there. One row all
// zero, one constant, one with an outlier: the scale searches' edges.
// K and V of one type are stored by one dispatch (a second plane of workgroups writes V): both
// caches are checked.
TEST_F(KvStoreKernel, EveryTypeStoresWhatTheReferenceEncodes) {
  const uint32_t T = 5, n_kv = 3, row0 = 2, slots = 40;
  const std::vector<uint32_t> offset = {2, 11, 23}, base = {1, 0, 3};
  Buffer heads = upload(std::vector<uint32_t>{offset[0], base[0], offset[1], base[1], offset[2], base[2]});
  const uint32_t kSentinel = 0xDEADBEEFu;
  for (uint32_t hd : {8u, 32u, 96u, 128u, 256u}) {
    AttentionKernels ak(ctx(), k().tuning, hd, 1);
    std::vector<float> xk = random_floats(size_t(T) * n_kv * hd, hd, -2.0f, 2.0f);
    std::vector<float> xv = random_floats(size_t(T) * n_kv * hd, hd + 1, -3.0f, 1.0f);
    auto row = [&](std::vector<float>& x, uint32_t t, uint32_t h) { return x.data() + (size_t(t) * n_kv + h) * hd; };
    row(xk, 1, 0)[hd / 2 + 1] = 25.0f;
    std::fill(row(xk, 3, 2), row(xk, 3, 2) + hd, 0.0f);
    std::fill(row(xv, 4, 1), row(xv, 4, 1) + hd, 0.3f);
    Buffer XK = upload(xk), XV = upload(xv);
    for (KvType t : kAllTypes) {
      if (!supported(t, hd)) continue;
      const uint32_t words = kv_row_words(t, hd);
      Buffer ck = upload(std::vector<uint32_t>(size_t(slots) * words, kSentinel));
      Buffer cv = upload(std::vector<uint32_t>(size_t(slots) * words, kSentinel));
      CommandStream cs(ctx());
      cs.begin();
      op_kv_store(cs, k(), ak, t, XK, ck, heads, T, n_kv, row0, 0, nullptr, XV, cv);
      cs.submit();
      for (bool is_v : {false, true}) {
        std::vector<float>& x = is_v ? xv : xk;
        const std::vector<uint32_t> got = download<uint32_t>(is_v ? cv : ck, size_t(slots) * words);
        std::vector<bool> written(slots, false);
        std::vector<uint32_t> want(words);
        size_t moved = 0;
        for (uint32_t h = 0; h < n_kv; ++h)
          for (uint32_t tok = 0; tok < T; ++tok) {
            const uint32_t slot = offset[h] + base[h] + row0 + tok;
            written[slot] = true;
            ref::kv_encode_row(t, row(x, tok, h), hd, want.data());
            const std::string where = std::string(is_v ? "V " : "K ") + kv_type_name(t) + " hd " +
                                      std::to_string(hd) + " head " + std::to_string(h) + " token " +
                                      std::to_string(tok);
            expect_same_row(t, hd, &got[size_t(slot) * words], want.data(), where, moved);
            if (HasFatalFailure()) return;
            std::vector<float> y(hd);
            ref::kv_decode_row(t, &got[size_t(slot) * words], hd, y.data());
            EXPECT_LE(rms_error(y, row(x, tok, h)), rms_bound(t, true)) << where;
          }
        EXPECT_LE(moved, std::max<size_t>(2, size_t(T) * n_kv * hd / 1000)) << kv_type_name(t) << " hd " << hd;
        for (uint32_t s = 0; s < slots; ++s) {
          if (written[s]) continue;
          for (uint32_t w = 0; w < words; ++w)
            ASSERT_EQ(got[size_t(s) * words + w], kSentinel) << kv_type_name(t) << " hd " << hd << " slot " << s;
        }
      }
    }
  }
}

// A rotated K cache's centre: k_center takes the mean of a layer's first SNAPVK_K_CENTER_ROWS keys
// (of 70 here), and kv_store then stores each key less it, word for word as the reference
// encodes the difference. The keys share a large offset, as real keys do: stored whole, every
// row would err by the offset.
TEST_F(KvStoreKernel, ARotatedKCacheStoresKeysLessTheirLayersCentre) {
  const uint32_t T = 70, n_kv = 3, hd = 64;
  AttentionKernels ak(ctx(), k().tuning, hd, 1);
  std::vector<float> x = random_floats(size_t(T) * n_kv * hd, 77, -1.0f, 1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] += 4.0f * float(int(i % (n_kv * hd) % 7) - 3);
  Buffer X = upload(x), C(ctx(), uint64_t(n_kv) * hd * 4);
  Buffer heads = upload(std::vector<uint32_t>{0, 0, T, 0, 2 * T, 0});
  for (KvType t : {KvType::HQ4, KvType::HQ3}) {
    const uint32_t words = kv_row_words(t, hd);
    Buffer cache(ctx(), uint64_t(n_kv) * T * words * 4);
    CommandStream cs(ctx());
    cs.begin();
    op_k_center(cs, k(), ak, X, C, T, n_kv);
    cs.barrier();
    op_kv_store(cs, k(), ak, t, X, cache, heads, T, n_kv, 0, 0, &C);
    cs.submit();
    const std::vector<float> c = download<float>(C, size_t(n_kv) * hd);
    for (uint32_t i = 0; i < n_kv * hd; ++i) {
      double mean = 0;
      for (uint32_t r = 0; r < SNAPVK_K_CENTER_ROWS; ++r) mean += x[size_t(r) * n_kv * hd + i];
      ASSERT_NEAR(c[i], mean / SNAPVK_K_CENTER_ROWS, 1e-5) << "centre value " << i;
    }
    const std::vector<uint32_t> got = download<uint32_t>(cache, size_t(n_kv) * T * words);
    std::vector<uint32_t> want(words);
    std::vector<float> less(hd);
    size_t moved = 0;
    for (uint32_t h = 0; h < n_kv; ++h)
      for (uint32_t tok = 0; tok < T; ++tok) {
        const float* row = x.data() + (size_t(tok) * n_kv + h) * hd;
        for (uint32_t d = 0; d < hd; ++d) less[d] = row[d] - c[h * hd + d];
        ref::kv_encode_row(t, less.data(), hd, want.data());
        const std::string where =
            std::string(kv_type_name(t)) + " head " + std::to_string(h) + " token " + std::to_string(tok);
        expect_same_row(t, hd, &got[(size_t(h) * T + tok) * words], want.data(), where, moved);
        if (HasFatalFailure()) return;
      }
    EXPECT_LE(moved, size_t(T) * n_kv * hd / 1000) << kv_type_name(t);
  }
}

struct HadamardKernel : VkTest {};

// hadamard.comp forward and inverse on rows of every head_dim a block type holds: powers of two,
// and 96, whose rotation mixes three blocks of 32 separately. Forward then inverse in one stream
// returns the rows.
TEST_F(HadamardKernel, RotatesLikeTheReference) {
  const uint32_t rows = 7;
  for (uint32_t hd : {32u, 64u, 96u, 128u, 256u}) {
    AttentionKernels ak(ctx(), k().tuning, hd, 1);
    std::vector<float> x = random_floats(size_t(rows) * hd, 40 + hd, -2.0f, 2.0f);
    x[3] = 30.0f;
    for (bool inverse : {false, true}) {
      Buffer X = upload(x);
      CommandStream cs(ctx());
      cs.begin();
      op_kv_rotate(cs, ak, X, rows, inverse);
      cs.submit();
      std::vector<float> want = x;
      for (uint32_t r = 0; r < rows; ++r) ref::kv_rotate(&want[size_t(r) * hd], hd, inverse);
      float scale = 0;
      for (float v : want) scale = std::max(scale, std::fabs(v));
      EXPECT_LE(max_abs_diff(download<float>(X, x.size()), want), 1e-5f * scale)
          << "hd " << hd << (inverse ? " inverse" : " forward");
    }
    Buffer X = upload(x);
    CommandStream cs(ctx());
    cs.begin();
    op_kv_rotate(cs, ak, X, rows, false);
    cs.barrier();
    op_kv_rotate(cs, ak, X, rows, true);
    cs.submit();
    EXPECT_LE(max_abs_diff(download<float>(X, x.size()), x), 1e-5f * 30.0f) << "hd " << hd << " there and back";
  }
}

}  // namespace
}  // namespace snapvk::test
