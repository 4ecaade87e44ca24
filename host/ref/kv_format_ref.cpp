#include "host/ref/kv_format_ref.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "host/gguf/quant.h"

namespace snapvk::ref {

namespace {

constexpr uint32_t kBlock = 32;

bool with_offset(KvType t) { return t == KvType::Q4_1 || t == KvType::Q5_1; }

// kv_layout.glsl: the first word of the high bits (q5_0, q5_1, hq3) and of the scales.
uint32_t high_words(KvType t, uint32_t hd) { return t == KvType::HQ3 ? hd / 16 : hd / 8; }
uint32_t scale_words(KvType t, uint32_t hd) {
  if (t == KvType::Q8_0) return hd / 4;
  if (t == KvType::Q5_0 || t == KvType::Q5_1) return hd / 8 + hd / kBlock;
  if (t == KvType::HQ3) return hd / 16 + hd / kBlock;
  return hd / 8;
}

// The grids' magnitudes, read from the words kv_format.h gives the shaders.
float hq4_value(int32_t q) {
  const uint32_t w = (q & 4) ? SNAPVK_HQ4_MAG_HI : SNAPVK_HQ4_MAG_LO;
  const float m = float((w >> (8 * (q & 3))) & 0xFF);
  return (q & 8) ? -m : m;
}
float hq3_value(int32_t q) {
  const float m = float((SNAPVK_HQ3_MAG >> (8 * (q & 3))) & 0xFF);
  return (q & 4) ? -m : m;
}

// The nearest of n ascending grid values to a, a tie going up: the number of midpoints at or
// below a. The midpoints are halves of integer sums, exact in float, as the shaders' constants.
template <class Grid>
int32_t nearest(Grid value, int32_t n, float a) {
  int32_t i = 0;
  for (int32_t j = 0; j + 1 < n; ++j) i += a >= (value(j) + value(j + 1)) * 0.5f ? 1 : 0;
  return i;
}
float iq4nl_value(int32_t q) { return float(kValuesIq4nl[q]); }

// A sign bit above the index of the nearest magnitude of |x| * id.
int32_t hq_code(bool three, float x, float id) {
  const float a = std::fabs(x) * id;
  if (three) return nearest(hq3_value, 4, a) | (x < 0.0f ? 4 : 0);
  return nearest(hq4_value, 8, a) | (x < 0.0f ? 8 : 0);
}

struct Block {
  int32_t q[kBlock] = {};
  float d = 0, m = 0;
};

Block quantize_q8_0(const float* x) {
  Block b;
  float amax = 0;
  for (uint32_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  b.d = amax / 127.0f;
  const float id = b.d != 0.0f ? 1.0f / b.d : 0.0f;
  for (uint32_t i = 0; i < kBlock; ++i) {
    const float v = x[i] * id, r = std::floor(std::fabs(v) + 0.5f);  // halves away from zero
    b.q[i] = int32_t(v < 0.0f ? -r : r);
  }
  return b;
}

// q4_0 and q5_0: the value of largest magnitude maps to -levels exactly.
Block quantize_symmetric(const float* x, float levels) {
  Block b;
  float amax = 0, mx = 0;
  for (uint32_t i = 0; i < kBlock; ++i)
    if (amax < std::fabs(x[i])) amax = std::fabs(x[i]), mx = x[i];
  b.d = mx / -levels;
  const float id = b.d != 0.0f ? 1.0f / b.d : 0.0f;
  for (uint32_t i = 0; i < kBlock; ++i)
    b.q[i] = std::clamp(int32_t(x[i] * id + levels + 0.5f), 0, int32_t(2 * levels) - 1);
  return b;
}

// q4_1 and q5_1: the block's range in `top` steps from its minimum.
Block quantize_offset(const float* x, float top) {
  Block b;
  float mn = x[0], mx = x[0];
  for (uint32_t i = 1; i < kBlock; ++i) mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
  b.d = (mx - mn) / top;
  b.m = mn;
  const float id = b.d != 0.0f ? 1.0f / b.d : 0.0f;
  for (uint32_t i = 0; i < kBlock; ++i) b.q[i] = std::clamp(int32_t((x[i] - mn) * id + 0.5f), 0, int32_t(top));
  return b;
}

// llama.cpp's cache copy: the largest value's scale, then one least-squares step weighted by x^2.
Block quantize_iq4_nl(const float* x) {
  Block b;
  float amax = 0, mx = 0;
  for (uint32_t i = 0; i < kBlock; ++i)
    if (amax < std::fabs(x[i])) amax = std::fabs(x[i]), mx = x[i];
  b.d = mx / -127.0f;
  const float id = b.d != 0.0f ? 1.0f / b.d : 0.0f;
  float sumqx = 0, sumq2 = 0;
  for (uint32_t i = 0; i < kBlock; ++i) {
    b.q[i] = nearest(iq4nl_value, 16, x[i] * id);
    const float g = iq4nl_value(b.q[i]), w = x[i] * x[i];
    sumqx += w * g * x[i];
    sumq2 += w * g * g;
  }
  if (sumq2 > 0.0f) b.d = sumqx / sumq2;
  return b;
}

// hq4 and hq3: of five scales around the block's standard deviation and the one that fits its
// largest value, the one of least squared error (rotated blocks are near Gaussian, but a block
// of few large values is not), refitted by least squares.
Block quantize_hq(const float* x, bool three) {
  Block b;
  const float sigma = three ? SNAPVK_HQ3_SIGMA : SNAPVK_HQ4_SIGMA;
  const auto value = three ? hq3_value : hq4_value;
  float amax = 0, ss = 0;
  for (uint32_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i])), ss += x[i] * x[i];
  const float rms = std::sqrt(ss / 32.0f);
  float best = INFINITY;
  for (uint32_t c = 0; c < 6; ++c) {
    const float dc = c < 5 ? rms * (0.8f + 0.1f * float(c)) / sigma : amax / 127.0f;
    const float id = dc != 0.0f ? 1.0f / dc : 0.0f;
    float err = 0;
    for (uint32_t i = 0; i < kBlock; ++i) {
      const float e = x[i] - value(hq_code(three, x[i], id)) * dc;
      err += e * e;
    }
    if (err < best) best = err, b.d = dc;
  }
  const float id = b.d != 0.0f ? 1.0f / b.d : 0.0f;
  float sumqx = 0, sumq2 = 0;
  for (uint32_t i = 0; i < kBlock; ++i) {
    b.q[i] = hq_code(three, x[i], id);
    const float g = value(b.q[i]);
    sumqx += g * x[i];
    sumq2 += g * g;
  }
  if (sumq2 > 0.0f) b.d = sumqx / sumq2;
  return b;
}

Block quantize_block(KvType t, const float* x) {
  switch (t) {
    case KvType::Q8_0: return quantize_q8_0(x);
    case KvType::Q4_0: return quantize_symmetric(x, 8.0f);
    case KvType::Q5_0: return quantize_symmetric(x, 16.0f);
    case KvType::Q4_1: return quantize_offset(x, 15.0f);
    case KvType::Q5_1: return quantize_offset(x, 31.0f);
    case KvType::IQ4_NL: return quantize_iq4_nl(x);
    case KvType::HQ4: return quantize_hq(x, false);
    case KvType::HQ3: return quantize_hq(x, true);
    default: return Block{};
  }
}

// Codes' low bits in words of `per` values from word 0, the bits above them (q5_0, q5_1: the
// fifth; hq3: the third) one word per block at high_words.
uint32_t low_bits(KvType t) { return t == KvType::Q8_0 ? 8 : t == KvType::HQ3 ? 2 : 4; }
bool has_high_bit(KvType t) { return t == KvType::Q5_0 || t == KvType::Q5_1 || t == KvType::HQ3; }

void pack_fields(KvType t, const KvRowFields& f, uint32_t hd, uint32_t* words) {
  std::fill(words, words + kv_row_words(t, hd), 0u);  // an odd block count leaves a zero half scale
  const uint32_t bits = low_bits(t), per = 32 / bits, mask = (1u << bits) - 1;
  for (uint32_t i = 0; i < hd; ++i) {
    words[i / per] |= (uint32_t(f.q[i]) & mask) << (bits * (i % per));
    if (has_high_bit(t)) words[high_words(t, hd) + i / kBlock] |= ((uint32_t(f.q[i]) >> bits) & 1u) << (i % kBlock);
  }
  const uint32_t s = scale_words(t, hd);
  for (uint32_t b = 0; b < hd / kBlock; ++b)
    if (with_offset(t))
      words[s + b] = f.d[b] | uint32_t(f.m[b]) << 16;
    else
      words[s + b / 2] |= uint32_t(f.d[b]) << (16 * (b & 1));
}

float value_of(KvType t, int32_t q, float d, float m) {
  switch (t) {
    case KvType::Q8_0: return float(q) * d;
    case KvType::Q4_0: return float(q - 8) * d;
    case KvType::Q5_0: return float(q - 16) * d;
    case KvType::Q4_1:
    case KvType::Q5_1: return float(q) * d + m;
    case KvType::IQ4_NL: return iq4nl_value(q) * d;
    case KvType::HQ4: return hq4_value(q) * d;
    case KvType::HQ3: return hq3_value(q) * d;
    default: return 0;
  }
}

}  // namespace

void kv_encode_row(KvType t, const float* x, uint32_t hd, uint32_t* words) {
  if (t == KvType::F32) {
    for (uint32_t i = 0; i < hd; ++i) words[i] = std::bit_cast<uint32_t>(x[i]);
    return;
  }
  if (t == KvType::F16 || t == KvType::BF16) {
    const auto half = t == KvType::F16 ? fp32_to_fp16 : fp32_to_bf16;
    for (uint32_t i = 0; i < hd / 2; ++i) words[i] = half(x[2 * i]) | uint32_t(half(x[2 * i + 1])) << 16;
    return;
  }
  KvRowFields f{std::vector<int32_t>(hd), std::vector<uint16_t>(hd / kBlock), std::vector<uint16_t>(hd / kBlock)};
  for (uint32_t b = 0; b < hd / kBlock; ++b) {
    const Block k = quantize_block(t, x + kBlock * b);
    std::copy(k.q, k.q + kBlock, f.q.begin() + kBlock * b);
    f.d[b] = fp32_to_fp16(k.d);
    f.m[b] = fp32_to_fp16(k.m);
  }
  pack_fields(t, f, hd, words);
}

KvRowFields kv_row_fields(KvType t, const uint32_t* words, uint32_t hd) {
  KvRowFields f{std::vector<int32_t>(hd), std::vector<uint16_t>(hd / kBlock), std::vector<uint16_t>(hd / kBlock)};
  if (!kv_type_blocks(t)) return f;
  const uint32_t bits = low_bits(t), per = 32 / bits, mask = (1u << bits) - 1;
  for (uint32_t i = 0; i < hd; ++i) {
    uint32_t q = (words[i / per] >> (bits * (i % per))) & mask;
    if (has_high_bit(t)) q |= ((words[high_words(t, hd) + i / kBlock] >> (i % kBlock)) & 1u) << bits;
    f.q[i] = t == KvType::Q8_0 ? int32_t(int8_t(uint8_t(q))) : int32_t(q);
  }
  const uint32_t s = scale_words(t, hd);
  for (uint32_t b = 0; b < hd / kBlock; ++b) {
    const uint32_t w = with_offset(t) ? words[s + b] : words[s + b / 2] >> (16 * (b & 1));
    f.d[b] = uint16_t(w & 0xFFFF);
    f.m[b] = with_offset(t) ? uint16_t(w >> 16) : 0;
  }
  return f;
}

void kv_decode_row(KvType t, const uint32_t* words, uint32_t hd, float* out) {
  if (t == KvType::F32) {
    for (uint32_t i = 0; i < hd; ++i) out[i] = std::bit_cast<float>(words[i]);
    return;
  }
  if (t == KvType::F16 || t == KvType::BF16) {
    const auto wide = t == KvType::F16 ? fp16_to_fp32 : bf16_to_fp32;
    for (uint32_t i = 0; i < hd; ++i) out[i] = wide(uint16_t(words[i / 2] >> (16 * (i & 1))));
    return;
  }
  const KvRowFields f = kv_row_fields(t, words, hd);
  for (uint32_t i = 0; i < hd; ++i)
    out[i] = value_of(t, f.q[i], fp16_to_fp32(f.d[i / kBlock]), fp16_to_fp32(f.m[i / kBlock]));
}

int32_t kv_code_rank(KvType t, int32_t q) {
  if (t == KvType::HQ4) return (q & 8) ? 7 - (q & 7) : 8 + (q & 7);
  if (t == KvType::HQ3) return (q & 4) ? 3 - (q & 3) : 4 + (q & 3);
  return q;  // the other grids ascend with the code
}

void kv_rotate(float* x, uint32_t hd, bool inverse) {
  const uint32_t n = hd & (~hd + 1);  // the lowest set bit
  const double norm = 1.0 / std::sqrt(double(n));
  std::vector<double> y(n);
  for (uint32_t b0 = 0; b0 < hd; b0 += n) {
    // forward flips the signs first (H S); inverse last (S H), the transpose
    for (uint32_t i = 0; i < n; ++i) y[i] = !inverse && SNAPVK_KV_ROT_SIGN(i) ? -double(x[b0 + i]) : x[b0 + i];
    for (uint32_t h = 1; h < n; h <<= 1)
      for (uint32_t i = 0; i < n; i += 2 * h)
        for (uint32_t j = i; j < i + h; ++j) {
          const double a = y[j], b = y[j + h];
          y[j] = a + b, y[j + h] = a - b;
        }
    for (uint32_t i = 0; i < n; ++i) x[b0 + i] = float(y[i] * norm * (inverse && SNAPVK_KV_ROT_SIGN(i) ? -1.0 : 1.0));
  }
}

}  // namespace snapvk::ref
