// Scalar reference quantization: type table, fp16/bf16 conversions, exact dequantization and
// quantization quality.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "host/gguf/ggml_types.h"
#include "host/gguf/quant.h"
#include "runtime/error.h"

namespace snapvk {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(QuantTypes, TraitsMatchGgml) {
  struct Row {
    GgmlType t;
    const char* name;
    uint32_t block, size;
    bool supported;
  };
  const Row rows[] = {
      {GgmlType::F32, "f32", 1, 4, true},           {GgmlType::F16, "f16", 1, 2, true},
      {GgmlType::BF16, "bf16", 1, 2, true},         {GgmlType::Q8_0, "q8_0", 32, 34, true},
      {GgmlType::Q4_0, "q4_0", 32, 18, true},       {GgmlType::Q4_K, "q4_K", 256, 144, true},
      {GgmlType::Q6_K, "q6_K", 256, 210, true},     {GgmlType::Q5_K, "q5_K", 256, 176, true},
      {GgmlType::Q4_1, "q4_1", 32, 20, true},       {GgmlType::Q5_0, "q5_0", 32, 22, true},
      {GgmlType::Q5_1, "q5_1", 32, 24, true},       {GgmlType::Q2_K, "q2_K", 256, 84, true},
      {GgmlType::Q3_K, "q3_K", 256, 110, true},     {GgmlType::IQ4_NL, "iq4_nl", 32, 18, true},
      {GgmlType::IQ4_XS, "iq4_xs", 256, 136, true}, {GgmlType::IQ2_XXS, "iq2_xxs", 256, 66, false},
      {GgmlType::IQ3_S, "iq3_s", 256, 110, false},  {GgmlType::TQ1_0, "tq1_0", 256, 54, false},
      {GgmlType::Q8_1, "q8_1", 32, 36, false},      {GgmlType::MXFP4, "mxfp4", 32, 17, false},
  };
  for (const Row& r : rows) {
    const TypeTraits* t = type_traits(static_cast<uint32_t>(r.t));
    ASSERT_NE(t, nullptr) << r.name;
    EXPECT_STREQ(t->name, r.name);
    EXPECT_STREQ(type_name(r.t), r.name);
    EXPECT_EQ(t->block_size, r.block);
    EXPECT_EQ(t->type_size, r.size);
    EXPECT_EQ(t->supported, r.supported) << r.name;
  }
  EXPECT_EQ(static_cast<uint32_t>(GgmlType::BF16), 30u);
  EXPECT_EQ(type_traits(4), nullptr);  // Q4_2, removed from ggml
  EXPECT_EQ(type_traits(31), nullptr);
  EXPECT_EQ(type_traits(1000), nullptr);
  EXPECT_STREQ(type_name(static_cast<GgmlType>(4)), "unknown");
  EXPECT_EQ(supported_type_names(),
            "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs, bf16");
}

TEST(QuantTypes, RowBytes) {
  EXPECT_EQ(row_bytes(GgmlType::F32, 7), 28u);
  EXPECT_EQ(row_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(row_bytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(row_bytes(GgmlType::Q6_K, 4096), 16u * 210u);
  try {
    row_bytes(GgmlType::Q4_K, 100);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of the q4_K block size 256"), std::string::npos) << e.what();
  }
  EXPECT_THROW(row_bytes(GgmlType::F32, ~uint64_t{0}), Error);  // overflow
  EXPECT_THROW(row_bytes(static_cast<GgmlType>(4), 32), Error);
}

TEST(QuantTypes, ParseType) {
  EXPECT_EQ(parse_type("f32"), GgmlType::F32);
  EXPECT_EQ(parse_type("F16"), GgmlType::F16);
  EXPECT_EQ(parse_type("bf16"), GgmlType::BF16);
  EXPECT_EQ(parse_type("Q8_0"), GgmlType::Q8_0);
  EXPECT_EQ(parse_type("q4_0"), GgmlType::Q4_0);
  EXPECT_EQ(parse_type("q4_k"), GgmlType::Q4_K);
  EXPECT_EQ(parse_type("Q6_K"), GgmlType::Q6_K);
  EXPECT_EQ(parse_type("q5_k"), GgmlType::Q5_K);
  EXPECT_EQ(parse_type("IQ4_XS"), GgmlType::IQ4_XS);
  EXPECT_EQ(parse_type("iq2_xxs"), GgmlType::IQ2_XXS);  // known, but not supported
  EXPECT_FALSE(parse_type("q4_2").has_value());
  EXPECT_FALSE(parse_type("").has_value());
  EXPECT_FALSE(parse_type("f32 ").has_value());
}

TEST(QuantFp16, EdgeCases) {
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);    // largest half
  EXPECT_EQ(fp32_to_fp16(65519.996f), 0x7bff);  // just below the rounding midpoint
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);    // midpoint ties to even: inf
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7c00);
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7c00);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xfc00);
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00);      // tie, even stays
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie, odd rounds up
  EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(fp32_to_fp16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(fp32_to_fp16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);  // tie to even: zero
  EXPECT_EQ(fp32_to_fp16(-0x1p-25f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(0x1.000002p-25f), 0x0001);  // just above the tie
  EXPECT_EQ(fp32_to_fp16(3 * 0x1p-25f), 0x0002);     // 1.5 ulp ties to even
  EXPECT_EQ(fp32_to_fp16(0x1.ff8p-15f), 0x03ff);     // largest subnormal
  EXPECT_EQ(fp32_to_fp16(0x1.ffcp-15f), 0x0400);     // rounds up into the normals
  EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
  // NaN stays NaN, even with a payload only in the low bits that a shift would lose.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffc00001u, 0x7fbfffffu}) {
    const uint16_t h = fp32_to_fp16(from_bits(nan));
    EXPECT_EQ(h & 0x7c00, 0x7c00) << std::hex << nan;
    EXPECT_NE(h & 0x03ff, 0) << std::hex << nan;
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000);
  }
  EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x03ff), 0x1.ff8p-15f);
  EXPECT_EQ(fp16_to_fp32(0x8400), -0x1p-14f);
  EXPECT_EQ(fp16_to_fp32(0x7bff), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0x7c00), INFINITY);
  EXPECT_EQ(bits(fp16_to_fp32(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7e00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7c01)));
}

TEST(QuantFp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_EQ(h & 0x7c00, 0x7c00u);
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
  }
}

TEST(QuantBf16, EdgeCases) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3f808001)), 0x3f81);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(fp32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(fp32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(fp32_to_bf16(from_bits(0x00010000)), 0x0001);  // subnormals are kept
  EXPECT_EQ(fp32_to_bf16(from_bits(0x7f800001)), 0x7fc0);  // NaN with low payload stays NaN
  EXPECT_EQ(fp32_to_bf16(from_bits(0xffc00000)), 0xffc0);
  EXPECT_EQ(bf16_to_fp32(0x3f80), 1.0f);
  EXPECT_EQ(bits(bf16_to_fp32(0x0001)), 0x00010000u);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_bf16(f), h) << std::hex << h;
  }
}

// ---- exact dequantization ----------------------------------------------------------------------

// 64-bit FNV-1a over the bit patterns of the floats.
uint64_t fnv1a(const std::vector<float>& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (float f : v) {
    uint32_t u = bits(f);
    for (int i = 0; i < 4; ++i, u >>= 8) h = (h ^ (u & 0xff)) * 0x100000001b3ull;
  }
  return h;
}

// Deterministic pseudo-random bytes (PCG-style LCG, top byte).
std::vector<uint8_t> lcg_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<uint8_t>(seed >> 56);
  }
  return b;
}

// Random blocks with every fp16 scale set to a fixed finite value, decoded and hashed. The
// expected hashes come from gguf-py's numpy dequantizers (gguf 0.19.0, which follow ggml),
// run over the same bytes: this pins the layouts and arithmetic to ggml's bit for bit.
TEST(QuantDequant, MatchesGgufPyOnRandomBlocks) {
  struct Case {
    GgmlType t;
    int64_t n;
    uint64_t expected;
  };
  const Case cases[] = {
      {GgmlType::Q8_0, 3 * 32, 0x9103aa20bae52622ull},  {GgmlType::Q4_0, 3 * 32, 0x4610034d0c912328ull},
      {GgmlType::Q4_K, 3 * 256, 0x29f40b5c1aa01f44ull}, {GgmlType::Q6_K, 3 * 256, 0x461b241fdd47021dull},
      {GgmlType::Q4_1, 3 * 32, 0xcc68f3cb8fd80c93ull},  {GgmlType::Q5_0, 3 * 32, 0xeea6cd37d9dc302aull},
      {GgmlType::Q5_1, 3 * 32, 0x1af1ade93451caf9ull},  {GgmlType::IQ4_NL, 3 * 32, 0xecf7ab59f8e834fbull},
      {GgmlType::Q2_K, 3 * 256, 0x76ac8cf5f7581331ull}, {GgmlType::Q3_K, 3 * 256, 0xbeb0236b13c2432dull},
      {GgmlType::Q5_K, 3 * 256, 0x6e31277471d1b1edull}, {GgmlType::IQ4_XS, 3 * 256, 0x56dd8213d5a90c30ull},
      {GgmlType::F16, 301, 0x78e7c1bae6ffa4acull},      {GgmlType::BF16, 301, 0x4c38c8acfc36fb05ull},
  };
  for (const Case& c : cases) {
    const TypeTraits& tr = traits_of(c.t);
    std::vector<uint8_t> raw = lcg_bytes(row_bytes(c.t, c.n), 42 + static_cast<uint32_t>(c.t));
    const auto set16 = [&](size_t off, uint16_t v) { std::memcpy(raw.data() + off, &v, 2); };
    for (size_t b = 0; b * tr.type_size < raw.size(); ++b) {
      const size_t o = b * tr.type_size;
      switch (c.t) {
        case GgmlType::Q8_0:
        case GgmlType::Q4_0: set16(o, 0x2e66); break;  // d ~ 0.1
        case GgmlType::Q4_K:
          set16(o, 0x2e66);
          set16(o + 2, 0x3155);
          break;  // d, dmin
        case GgmlType::Q6_K: set16(o + 208, 0x2a66); break;
        case GgmlType::Q5_0: set16(o, 0x2e66); break;
        case GgmlType::Q4_1:
        case GgmlType::Q5_1:
          set16(o, 0x2e66);
          set16(o + 2, 0xb155);
          break;  // d, m < 0
        case GgmlType::IQ4_NL:
        case GgmlType::IQ4_XS: set16(o, 0x2066); break;  // d ~ 0.008
        case GgmlType::Q2_K:
          set16(o + 80, 0x2e66);
          set16(o + 82, 0x3155);
          break;
        case GgmlType::Q3_K: set16(o + 108, 0x2a66); break;
        case GgmlType::Q5_K:
          set16(o, 0x2e66);
          set16(o + 2, 0x3155);
          break;
        default: break;
      }
    }
    if (c.t == GgmlType::F16)  // keep halves finite: clear the top exponent bit
      for (size_t i = 1; i < raw.size(); i += 2) raw[i] &= 0xbf;
    std::vector<float> y(c.n);
    dequantize_row(c.t, raw.data(), y.data(), c.n);
    for (float v : y) ASSERT_TRUE(std::isfinite(v) || c.t == GgmlType::BF16);
    EXPECT_EQ(fnv1a(y), c.expected) << type_name(c.t) << " hash 0x" << std::hex << fnv1a(y);
  }
}

TEST(QuantDequant, HandBuiltBlocks) {
  {  // Q8_0: x = d * q
    BlockQ8_0 b{};
    b.d = fp32_to_fp16(0.5f);
    for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j * 8 - 128);
    float y[32];
    dequantize_row(GgmlType::Q8_0, &b, y, 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j * 8 - 128) * 0.5f);
  }
  {  // Q4_0: low nibbles are elements 0..15, high nibbles 16..31, offset 8
    BlockQ4_0 b{};
    b.d = fp32_to_fp16(-2.0f);
    for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    float y[32];
    dequantize_row(GgmlType::Q4_0, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], (j - 8) * -2.0f);
      EXPECT_EQ(y[j + 16], (7 - j) * -2.0f);
    }
  }
  {  // Q4_K: 8 sub-blocks of 32 with 6-bit scale sc and min m: x = d*sc*q - dmin*m
    BlockQ4_K b{};
    b.d = fp32_to_fp16(0.25f);
    b.dmin = fp32_to_fp16(0.125f);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = (j * 23 + 5) % 64;
      m[j] = (j * 41 + 60) % 64;
    }
    // Pack: sub-blocks 0..3 in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins);
    // sub-blocks 4..7 as nibbles in bytes 8..11 plus 2 high bits in the tops of bytes 0..7.
    for (int j = 0; j < 4; ++j) {
      b.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      b.scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
      b.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    std::vector<uint8_t> q = lcg_bytes(128, 7);
    std::memcpy(b.qs, q.data(), 128);
    float y[256];
    dequantize_row(GgmlType::Q4_K, &b, y, 256);
    for (int i = 0; i < 256; ++i) {
      const int chunk = i / 64, sub = i / 32, l = i % 32;
      const uint8_t byte = b.qs[chunk * 32 + l];
      const int qv = (i % 64) < 32 ? (byte & 15) : (byte >> 4);
      const float d1 = 0.25f * sc[sub], m1 = 0.125f * m[sub];
      ASSERT_EQ(y[i], d1 * qv - m1) << i;
    }
  }
  {  // Q6_K: 16 sub-blocks of 16 with int8 scales: x = d * sc * (q - 32)
    BlockQ6_K b{};
    b.d = fp32_to_fp16(0.0625f);
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(j * 17 - 128);
    int L[256];
    for (int i = 0; i < 256; ++i) L[i] = (i * 7 + 3) % 64;
    // Pack: per 128-element half, ql[l] holds elements l (low nibble) and l+64 (high),
    // ql[l+32] holds l+32 and l+96; qh[l] holds the top 2 bits of l, l+32, l+64, l+96.
    for (int h = 0; h < 2; ++h) {
      const int* Lh = L + 128 * h;
      uint8_t* ql = b.ql + 64 * h;
      uint8_t* qh = b.qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((Lh[l] & 15) | ((Lh[l + 64] & 15) << 4));
        ql[l + 32] = static_cast<uint8_t>((Lh[l + 32] & 15) | ((Lh[l + 96] & 15) << 4));
        qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                     ((Lh[l + 96] >> 4) << 6));
      }
    }
    float y[256];
    dequantize_row(GgmlType::Q6_K, &b, y, 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], 0.0625f * b.scales[i / 16] * (L[i] - 32)) << i;
  }
}

// The types added for issue #12, each from hand-built fields, against ggml's formulas written out
// per element (block layouts in ggml-common.h, dequantize_row_* in ggml-quants.c).
TEST(QuantDequant, HandBuiltBlocksLegacyAndIq4nl) {
  const std::vector<uint8_t> qs = lcg_bytes(16, 3);
  const uint32_t qh = 0xA5A5F00Fu;
  const auto bit = [&](int j) { return int((qh >> j) & 1); };
  {  // Q4_1: x = d * q + m, low nibbles are elements 0..15
    BlockQ4_1 b{};
    b.d = fp32_to_fp16(0.5f);
    b.m = fp32_to_fp16(-3.0f);
    std::memcpy(b.qs, qs.data(), 16);
    float y[32];
    dequantize_row(GgmlType::Q4_1, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], (qs[j] & 15) * 0.5f - 3.0f);
      EXPECT_EQ(y[j + 16], (qs[j] >> 4) * 0.5f - 3.0f);
    }
  }
  {  // Q5_0: x = d * (q - 16), bit 4 of element j is bit j of qh (little-endian)
    BlockQ5_0 b{};
    b.d = fp32_to_fp16(0.25f);
    std::memcpy(b.qh, &qh, 4);
    std::memcpy(b.qs, qs.data(), 16);
    float y[32];
    dequantize_row(GgmlType::Q5_0, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], ((qs[j] & 15) + 16 * bit(j) - 16) * 0.25f) << j;
      EXPECT_EQ(y[j + 16], ((qs[j] >> 4) + 16 * bit(j + 16) - 16) * 0.25f) << j;
    }
  }
  {  // Q5_1: x = d * q + m
    BlockQ5_1 b{};
    b.d = fp32_to_fp16(0.125f);
    b.m = fp32_to_fp16(1.0f);
    std::memcpy(b.qh, &qh, 4);
    std::memcpy(b.qs, qs.data(), 16);
    float y[32];
    dequantize_row(GgmlType::Q5_1, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], ((qs[j] & 15) + 16 * bit(j)) * 0.125f + 1.0f) << j;
      EXPECT_EQ(y[j + 16], ((qs[j] >> 4) + 16 * bit(j + 16)) * 0.125f + 1.0f) << j;
    }
  }
  {  // IQ4_NL: x = d * kvalues_iq4nl[q]
    const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    BlockIQ4_NL b{};
    b.d = fp32_to_fp16(-0.5f);
    for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
    float y[32];
    dequantize_row(GgmlType::IQ4_NL, &b, y, 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], -0.5f * kv[j]);
      EXPECT_EQ(y[j + 16], -0.5f * kv[15 - j]);
    }
  }
}

TEST(QuantDequant, HandBuiltBlocksKQuantsAndIq4xs) {
  const std::vector<uint8_t> r = lcg_bytes(256, 11);
  {  // Q2_K: 16 sub-blocks of 16; scale byte e/16 (scale low nibble, min high);
     // element 128n + 32j + l is bits 2j.. of qs[32n + l]
    BlockQ2_K b{};
    b.d = fp32_to_fp16(0.5f);
    b.dmin = fp32_to_fp16(0.25f);
    for (int i = 0; i < 16; ++i) b.scales[i] = static_cast<uint8_t>(((i * 7 + 3) % 16) | (((i * 5 + 1) % 16) << 4));
    std::memcpy(b.qs, r.data(), 64);
    float y[256];
    dequantize_row(GgmlType::Q2_K, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32, sc = b.scales[e / 16];
      const int q = (b.qs[32 * n + l] >> (2 * j)) & 3;
      ASSERT_EQ(y[e], 0.5f * float(sc & 15) * float(q) - 0.25f * float(sc >> 4)) << e;
    }
  }
  {  // Q3_K: x = d * (sc - 32) * (q - 4); q's low 2 bits as Q2_K, bit 2 in bit e/32 of hmask[e % 32];
     // 6-bit sc[i]: low 4 bits at scales[i % 8] >> 4*(i/8), high 2 at scales[8 + i % 4] >> 2*(i/4)
    BlockQ3_K b{};
    b.d = fp32_to_fp16(0.125f);
    int sc[16];
    for (int i = 0; i < 16; ++i) {
      sc[i] = (i * 13 + 7) % 64;
      b.scales[i % 8] |= static_cast<uint8_t>((sc[i] & 15) << (4 * (i / 8)));
      b.scales[8 + i % 4] |= static_cast<uint8_t>((sc[i] >> 4) << (2 * (i / 4)));
    }
    std::memcpy(b.hmask, r.data() + 64, 32);
    std::memcpy(b.qs, r.data() + 96, 64);
    float y[256];
    dequantize_row(GgmlType::Q3_K, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, j = (e % 128) / 32, l = e % 32;
      const int q = ((b.qs[32 * n + l] >> (2 * j)) & 3) + 4 * ((b.hmask[l] >> (e / 32)) & 1);
      ASSERT_EQ(y[e], 0.125f * float(sc[e / 16] - 32) * float(q - 4)) << e;
    }
  }
  {  // Q5_K: Q4_K plus bit e/32 of qh[e % 32] as bit 4 of q
    BlockQ5_K b{};
    b.d = fp32_to_fp16(0.25f);
    b.dmin = fp32_to_fp16(0.5f);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = (j * 29 + 11) % 64;
      m[j] = (j * 37 + 2) % 64;
    }
    for (int j = 0; j < 4; ++j) {
      b.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      b.scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
      b.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    std::memcpy(b.qh, r.data(), 32);
    std::memcpy(b.qs, r.data() + 32, 128);
    float y[256];
    dequantize_row(GgmlType::Q5_K, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
      const uint8_t byte = b.qs[(e / 64) * 32 + e % 32];
      const int q = ((e % 64) < 32 ? (byte & 15) : (byte >> 4)) + 16 * ((b.qh[e % 32] >> (e / 32)) & 1);
      ASSERT_EQ(y[e], 0.25f * float(sc[e / 32]) * float(q) - 0.5f * float(m[e / 32])) << e;
    }
  }
  {  // IQ4_XS: 8 sub-blocks of 32 with 6-bit ls: x = d * (ls - 32) * kvalues_iq4nl[q]
    const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    BlockIQ4_XS b{};
    b.d = fp32_to_fp16(0.0625f);
    int ls[8];
    for (int i = 0; i < 8; ++i) {
      ls[i] = (i * 19 + 5) % 64;
      b.scales_l[i / 2] |= static_cast<uint8_t>((ls[i] & 15) << (4 * (i % 2)));
      b.scales_h = static_cast<uint16_t>(b.scales_h | ((ls[i] >> 4) << (2 * i)));
    }
    std::memcpy(b.qs, r.data() + 100, 128);
    float y[256];
    dequantize_row(GgmlType::IQ4_XS, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
      const int ib = e / 32, w = e % 32;
      const int q = (b.qs[16 * ib + w % 16] >> (4 * (w / 16))) & 15;
      ASSERT_EQ(y[e], 0.0625f * float(ls[ib] - 32) * float(kv[q])) << e;
    }
  }
}

// ---- quantization ------------------------------------------------------------------------------

uint64_t fnv1a_bytes(const std::vector<uint8_t>& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : v) h = (h ^ b) * 0x100000001b3ull;
  return h;
}

// The quantizers are not promised to be bit-identical to ggml, but today they are: the expected
// hashes come from ggml's quantize_row_*_ref (llama.cpp as vendored in llama-cpp-python 0.3.36)
// on the same input. The input is pure float arithmetic (no libm), so it is the same everywhere:
// roughly Gaussian values at several scales, outliers, an all-zero block and an offset block.
TEST(QuantQuantize, MatchesGgmlReferenceBitForBit) {
  constexpr int64_t n = 256 * 5;
  uint64_t s = 2024;
  auto u = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(s >> 40) * 0x1p-24f;
  };
  const float scales[5] = {1.0f, 0.01f, 100.0f, 0.5f, 3.0f};
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) {
    float v = (u() + u() + u() + u() - 2.0f) * scales[(i / 64) % 5];
    if (i % 97 == 0) v *= 8.0f;
    if (i >= 320 && i < 352) v = 0.0f;
    if (i >= 512 && i < 768) v = v * 0.25f + 1.5f;
    x[i] = v;
  }
  struct Case {
    GgmlType t;
    uint64_t expected;
  };
  for (const Case& c : {Case{GgmlType::Q8_0, 0xf55ffc74c81e2f20ull}, Case{GgmlType::Q4_0, 0x41449299ecc791bbull},
                        Case{GgmlType::Q4_K, 0x15bfb5fdf6210a81ull}, Case{GgmlType::Q6_K, 0xe62b3bd0706fb83dull}}) {
    std::vector<uint8_t> q(row_bytes(c.t, n));
    quantize_row(c.t, x.data(), q.data(), n);
    EXPECT_EQ(fnv1a_bytes(q), c.expected) << type_name(c.t) << " hash 0x" << std::hex << fnv1a_bytes(q);
  }
}

struct QualityCase {
  GgmlType type;
  int64_t n;           // an odd number of blocks
  double max_rel_rms;  // measured value plus a margin, see the comment on the test
};

void PrintTo(const QualityCase& c, std::ostream* os) {
  *os << type_name(c.type) << ", " << c.n << " values, relative RMS error at most " << c.max_rel_rms;
}

class QuantRoundTrip : public ::testing::TestWithParam<QualityCase> {};

// Relative RMS error sqrt(sum (x - y)^2 / sum x^2) on N(0, 1) data. Measured with this seed:
// f16 0.022%, bf16 0.17%, q8_0 0.53%, q4_0 8.9%, q4_K 7.3%, q6_K 1.8%, q4_1 7.9%, q5_0 4.3%,
// q5_1 3.8%, iq4_nl 7.7%, q2_K 28.6%, q3_K 15.4%, q5_K 3.6%, iq4_xs 7.9% (bounds leave a margin
// for other standard libraries' normal_distribution).
TEST_P(QuantRoundTrip, GaussianErrorWithinBound) {
  const QualityCase c = GetParam();
  std::mt19937 rng(1234);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(c.n);
  for (float& v : x) v = dist(rng);
  // Quantize into a buffer at an odd address: conversions must not assume alignment.
  std::vector<uint8_t> buf(row_bytes(c.type, c.n) + 1);
  quantize_row(c.type, x.data(), buf.data() + 1, c.n);
  std::vector<float> y(c.n);
  dequantize_row(c.type, buf.data() + 1, y.data(), c.n);
  double err = 0, ref = 0;
  for (int64_t i = 0; i < c.n; ++i) {
    err += double(x[i] - y[i]) * (x[i] - y[i]);
    ref += double(x[i]) * x[i];
  }
  const double rel = std::sqrt(err / ref);
  EXPECT_LE(rel, c.max_rel_rms) << type_name(c.type);
  RecordProperty("rel_rms", std::to_string(rel));

  // Quantizing what was decoded again must reproduce it (the grid is a fixed point) for the
  // block types whose scale (and offset) come straight from the block maximum (and minimum).
  if (c.type == GgmlType::Q8_0 || c.type == GgmlType::Q4_0 || c.type == GgmlType::F16 || c.type == GgmlType::BF16 ||
      c.type == GgmlType::Q5_0 || c.type == GgmlType::Q4_1 || c.type == GgmlType::Q5_1) {
    std::vector<uint8_t> again(row_bytes(c.type, c.n));
    quantize_row(c.type, y.data(), again.data(), c.n);
    std::vector<float> y2(c.n);
    dequantize_row(c.type, again.data(), y2.data(), c.n);
    for (int64_t i = 0; i < c.n; ++i) ASSERT_NEAR(y2[i], y[i], 1e-3f * std::fabs(y[i]) + 1e-6f);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Quant, QuantRoundTrip,
    ::testing::Values(QualityCase{GgmlType::F32, 333, 0.0}, QualityCase{GgmlType::F16, 333, 0.0005},
                      QualityCase{GgmlType::BF16, 333, 0.003}, QualityCase{GgmlType::Q8_0, 37 * 32, 0.007},
                      QualityCase{GgmlType::Q4_0, 37 * 32, 0.10}, QualityCase{GgmlType::Q4_K, 7 * 256, 0.08},
                      QualityCase{GgmlType::Q6_K, 7 * 256, 0.023}, QualityCase{GgmlType::Q4_1, 37 * 32, 0.09},
                      QualityCase{GgmlType::Q5_0, 37 * 32, 0.05}, QualityCase{GgmlType::Q5_1, 37 * 32, 0.045},
                      QualityCase{GgmlType::IQ4_NL, 37 * 32, 0.09}, QualityCase{GgmlType::Q2_K, 7 * 256, 0.32},
                      QualityCase{GgmlType::Q3_K, 7 * 256, 0.175}, QualityCase{GgmlType::Q5_K, 7 * 256, 0.042},
                      QualityCase{GgmlType::IQ4_XS, 7 * 256, 0.09}),
    [](const auto& info) { return std::string(type_name(info.param.type)); });

TEST(QuantRoundTripExact, F32IsIdentity) {
  const float x[3] = {1.5f, -0.0f, 3e-40f};
  float y[3];
  uint8_t buf[12];
  quantize_row(GgmlType::F32, x, buf, 3);
  dequantize_row(GgmlType::F32, buf, y, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(bits(y[i]), bits(x[i]));
}

TEST(QuantEdge, ZerosAndConstantsStayFinite) {
  for (GgmlType t :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
        GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q5_K, GgmlType::IQ4_XS}) {
    for (float value : {0.0f, 1.0f, -3.0f}) {
      std::vector<float> x(512, value), y(512);
      std::vector<uint8_t> q(row_bytes(t, 512));
      quantize_row(t, x.data(), q.data(), 512);
      dequantize_row(t, q.data(), y.data(), 512);
      for (float v : y) {
        ASSERT_TRUE(std::isfinite(v)) << type_name(t);
        ASSERT_NEAR(v, value, 0.02f * std::fabs(value) + 1e-6f) << type_name(t) << " " << value;
      }
    }
  }
}

TEST(QuantEdge, BadArguments) {
  float x[256] = {}, y[256];
  uint8_t q[1024];
  EXPECT_THROW(quantize_row(GgmlType::IQ2_XXS, x, q, 256), Error);  // known, unsupported
  EXPECT_THROW(dequantize_row(GgmlType::IQ2_XXS, q, y, 256), Error);
  EXPECT_THROW(dequantize_row(GgmlType::TQ1_0, q, y, 256), Error);
  EXPECT_THROW(dequantize_row(static_cast<GgmlType>(4), q, y, 256), Error);
  EXPECT_THROW(quantize_row(GgmlType::Q4_K, x, q, 100), Error);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_0, q, y, 33), Error);
  EXPECT_THROW(dequantize_row(GgmlType::F16, q, y, -1), Error);
  try {
    dequantize_row(GgmlType::Q6_K, q, y, 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q6_K block size 256"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace snapvk
