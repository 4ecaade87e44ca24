#include "host/gguf/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/error.h"

namespace snapvk {

// ---- scalar formats --------------------------------------------------------------------------

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000 | (mant << 13));  // inf / NaN
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));  // rebias 15 -> 127
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000)  // NaN: keep the top payload bits, force quiet so it cannot become inf
    return static_cast<uint16_t>(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
  if (ax >= 0x477ff000) return sign | 0x7c00;  // >= 65520 rounds past the max half (65504)
  if (ax >= 0x38800000) {
    // Normal half: rebias the exponent, drop 13 mantissa bits with round-to-nearest-even.
    // A carry out of the mantissa correctly bumps the exponent.
    uint32_t h = (ax >> 13) - (112u << 10);
    const uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // Subnormal half (or zero): value = m * 2^-24. The float is mant24 * 2^(e-150), so
  // m = mant24 >> (126 - e), rounded to nearest even.
  const uint32_t e = ax >> 23;
  if (e < 102) return sign;  // below 2^-25: rounds to zero
  const uint32_t mant = (ax & 0x7fffff) | 0x800000;
  const uint32_t shift = 126 - e;  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1))) ++h;  // may round up to the smallest normal
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_fp32(uint16_t h) { return bits_float(uint32_t(h) << 16); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);  // round to nearest even
}

// ---- quantization helpers (after ggml-quants.c) ------------------------------------------------

namespace {

constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even (the default FP environment), like ggml's nearest_int.
int nearest_int(float v) { return static_cast<int>(std::lrintf(v)); }

int clampi(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// Fits x[i] ~ scale * L[i] - the_min with L in 0..nmax, minimising the weighted squared error.
// Starts from the min/max fit, then tries nstep+1 slightly different inverse scales, each
// followed by a closed-form least-squares solve for (scale, min). Returns the scale.
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;  // the offset is only ever subtracted
  if (max == min) {
    std::fill(L, L + n, 0);
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clampi(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D <= 0) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float cur_error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * Laux[i] + this_min - x[i];
      cur_error += w[i] * (diff * diff);
    }
    if (cur_error < best_error) {
      std::copy(Laux, Laux + n, L);
      best_error = cur_error;
      scale = this_scale;
      min = this_min;
    }
  }
  *the_min = -min;
  return scale;
}

// Fits x[i] ~ scale * (L[i] - nmax) with L in 0..2*nmax-1 (a symmetric signed grid), weighting
// each element by x^2 so large values are reproduced best. Tries 19 inverse scales around
// -nmax/max and keeps the one with the best least-squares fit. Returns the (signed) scale.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, 0);
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Unpacks the 6-bit scale and min of sub-block j (0..7) from BlockQ4_K::scales:
// bytes 0..3 hold sc[0..3] (low 6 bits), bytes 4..7 hold m[0..3]; bytes 8..11 hold the low
// 4 bits of sc[4..7] / m[4..7], whose top 2 bits sit in the spare top bits of bytes 0..7.
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// ---- per-block conversions ---------------------------------------------------------------------

void dequant_q8_0(const BlockQ8_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < kQK8_0; ++j) y[j] = b.qs[j] * d;
}

void quant_q8_0(const float* x, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  for (int j = 0; j < kQK8_0; ++j)
    b.qs[j] = static_cast<int8_t>(clampi(static_cast<int>(std::round(x[j] * id)), -127, 127));
}

void dequant_q4_0(const BlockQ4_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    const int x0 = (b.qs[j] & 0x0F) - 8;
    const int x1 = (b.qs[j] >> 4) - 8;
    y[j] = x0 * d;
    y[j + kQK4_0 / 2] = x1 * d;
  }
}

// The value of largest magnitude maps to -8 exactly, so the asymmetric range -8..7 is used
// fully on the side where it matters.
void quant_q4_0(const float* x, BlockQ4_0& b) {
  float amax = 0, max = 0;
  for (int j = 0; j < kQK4_0; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  auto q = [&](float v) {  // ggml: MIN(15, (int8_t)(v*id + 8.5f)), truncating; clamped first
    const float t = v * id + 8.5f;
    return static_cast<uint8_t>(t >= 15.f ? 15 : t > 0.f ? static_cast<int>(t) : 0);
  };
  for (int j = 0; j < kQK4_0 / 2; ++j)
    b.qs[j] = static_cast<uint8_t>(q(x[j]) | (q(x[j + kQK4_0 / 2]) << 4));
}

void dequant_q4_k(const BlockQ4_K& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  const float min = fp16_to_fp32(b.dmin);
  const uint8_t* q = b.qs;
  for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    get_scale_min_k4(is, b.scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b.scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
  }
}

void quant_q4_k(const float* x, BlockQ4_K& b) {
  uint8_t L[kQK_K], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    // Weight each element by the sub-block's RMS plus its own magnitude (ggml's choice).
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f,
                                 0.1f, 20);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  // Quantize the 8 scales and 8 mins to 6 bits against the super-block maxima.
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(b.scales, 0, sizeof(b.scales));
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = static_cast<uint8_t>(clampi(nearest_int(inv_scale * scales[j]), 0, 63));
    const uint8_t lm = static_cast<uint8_t>(clampi(nearest_int(inv_min * mins[j]), 0, 63));
    if (j < 4) {
      b.scales[j] = ls;
      b.scales[j + 4] = lm;
    } else {
      b.scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      b.scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      b.scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  b.d = fp32_to_fp16(max_scale / 63.f);
  b.dmin = fp32_to_fp16(max_min / 63.f);
  // Requantize against the scales as they will actually be decoded.
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, b.scales, &sc, &m);
    const float d = fp16_to_fp32(b.d) * sc;
    if (!d) continue;
    const float dm = fp16_to_fp32(b.dmin) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, 15));
  }
  uint8_t* q = b.qs;
  for (int j = 0; j < kQK_K; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void dequant_q6_k(const BlockQ6_K& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
  }
}

void quant_q6_k(const float* x, BlockQ6_K& b) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(&b, 0, sizeof(b));
  if (max_abs_scale < kGroupMaxEps) return;  // all (near) zero: d = 0 decodes to zeros
  // The largest scale maps to -128, using the full int8 range on its side.
  const float iscale = -128.f / max_scale;
  b.d = fp32_to_fp16(1 / iscale);
  for (int ib = 0; ib < 16; ++ib)
    b.scales[ib] = static_cast<int8_t>(clampi(nearest_int(iscale * scales[ib]), -128, 127));
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_fp32(b.d) * b.scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
  }
  uint8_t* ql = b.ql;
  uint8_t* qh = b.qh;
  for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
}

// Runs fn(block, elements) over every block. Blocks are copied through a local struct so
// src/dst need no particular alignment (tensor data inside a GGUF may sit at any offset).
template <typename Block, int QK, typename Fn>
void for_each_block_in(const void* src, float* dst, int64_t nb, Fn fn) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i) {
    Block b;
    std::memcpy(&b, p + i * sizeof(Block), sizeof(Block));
    fn(b, dst + i * QK);
  }
}

template <typename Block, int QK, typename Fn>
void for_each_block_out(const float* src, void* dst, int64_t nb, Fn fn) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i) {
    Block b;
    fn(src + i * QK, b);
    std::memcpy(p + i * sizeof(Block), &b, sizeof(Block));
  }
}

// Validates (type, n) and returns the number of blocks.
int64_t check_row(GgmlType type, int64_t n, const char* what) {
  const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
  if (!t || !t->supported)
    throw Error(ErrorKind::BadModel, std::string(what) + ": unsupported type " + type_name(type));
  if (n < 0 || n % t->block_size != 0)
    throw Error(ErrorKind::BadModel, std::string(what) + ": " + std::to_string(n) + " elements is not a multiple of the " +
                t->name + " block size " + std::to_string(t->block_size));
  return n / t->block_size;
}

}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t nb = check_row(type, n, "dequantize_row");
  const auto* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = type == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      }
      return;
    case GgmlType::Q8_0: return for_each_block_in<BlockQ8_0, kQK8_0>(src, dst, nb, dequant_q8_0);
    case GgmlType::Q4_0: return for_each_block_in<BlockQ4_0, kQK4_0>(src, dst, nb, dequant_q4_0);
    case GgmlType::Q4_K: return for_each_block_in<BlockQ4_K, kQK_K>(src, dst, nb, dequant_q4_k);
    case GgmlType::Q6_K: return for_each_block_in<BlockQ6_K, kQK_K>(src, dst, nb, dequant_q6_k);
    default: break;
  }
  throw Error(ErrorKind::BadModel, std::string("dequantize_row: unsupported type ") + type_name(type));
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  const int64_t nb = check_row(type, n, "quantize_row");
  auto* p = static_cast<uint8_t*>(dst);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == GgmlType::F16 ? fp32_to_fp16(src[i]) : fp32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0: return for_each_block_out<BlockQ8_0, kQK8_0>(src, dst, nb, quant_q8_0);
    case GgmlType::Q4_0: return for_each_block_out<BlockQ4_0, kQK4_0>(src, dst, nb, quant_q4_0);
    case GgmlType::Q4_K: return for_each_block_out<BlockQ4_K, kQK_K>(src, dst, nb, quant_q4_k);
    case GgmlType::Q6_K: return for_each_block_out<BlockQ6_K, kQK_K>(src, dst, nb, quant_q6_k);
    default: break;
  }
  throw Error(ErrorKind::BadModel, std::string("quantize_row: unsupported type ") + type_name(type));
}

}  // namespace snapvk
