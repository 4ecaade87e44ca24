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
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);                 // round to nearest even
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
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
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
  for (int j = 0; j < kQK4_0 / 2; ++j) b.qs[j] = static_cast<uint8_t>(q(x[j]) | (q(x[j + kQK4_0 / 2]) << 4));
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

// Q4_K and Q5_K: for each 32-element sub-block a (scale, min) fit with values 0..nmax, both
// quantized to 6 bits against the super-block maxima and packed as get_scale_min_k4 reads them;
// L gets the values requantized against the scales as they will actually be decoded.
void quant_k_scale_min(const float* x, int nmax, float rmin, int nstep, uint8_t* packed, uint16_t& d16,
                       uint16_t& dmin16, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    // Weight each element by the sub-block's RMS plus its own magnitude (ggml's choice).
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  // Quantize the 8 scales and 8 mins to 6 bits against the super-block maxima.
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = static_cast<uint8_t>(clampi(nearest_int(inv_scale * scales[j]), 0, 63));
    const uint8_t lm = static_cast<uint8_t>(clampi(nearest_int(inv_min * mins[j]), 0, 63));
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  d16 = fp32_to_fp16(max_scale / 63.f);
  dmin16 = fp32_to_fp16(max_min / 63.f);
  // Requantize against the scales as they will actually be decoded.
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, packed, &sc, &m);
    const float d = fp16_to_fp32(d16) * sc;
    if (!d) continue;
    const float dm = fp16_to_fp32(dmin16) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
  }
}

void quant_q4_k(const float* x, BlockQ4_K& b) {
  uint8_t L[kQK_K];
  quant_k_scale_min(x, 15, -1.f, 20, b.scales, b.d, b.dmin, L);
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

// ---- Q4_1, Q5_0, Q5_1 (32-element blocks) -----------------------------------------------------

void dequant_q4_1(const BlockQ4_1& b, float* y) {
  const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
  for (int j = 0; j < kQK4_1 / 2; ++j) {
    const int x0 = b.qs[j] & 0x0F, x1 = b.qs[j] >> 4;
    y[j] = x0 * d + m;
    y[j + kQK4_1 / 2] = x1 * d + m;
  }
}

// (int)(v + 0.5f) clamped to 0..top: round half up for the non-negative v of the min/max fits.
uint8_t round_up_clamp(float v, int top) {
  const float t = v + 0.5f;
  return static_cast<uint8_t>(t >= float(top) ? top : t > 0.f ? static_cast<int>(t) : 0);
}

void min_max(const float* x, int n, float& lo, float& hi) {
  lo = hi = x[0];
  for (int j = 1; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
}

// Asymmetric: the block's minimum is the offset and (max - min) / 15 the step.
void quant_q4_1(const float* x, BlockQ4_1& b) {
  float lo, hi;
  min_max(x, kQK4_1, lo, hi);
  const float d = (hi - lo) / 15;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  b.m = fp32_to_fp16(lo);
  for (int j = 0; j < kQK4_1 / 2; ++j)
    b.qs[j] = static_cast<uint8_t>(round_up_clamp((x[j] - lo) * id, 15) |
                                   (round_up_clamp((x[j + kQK4_1 / 2] - lo) * id, 15) << 4));
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Bit 4 of element j (Q5_0 / Q5_1) is bit j of the little-endian qh word.
void dequant_q5_0(const BlockQ5_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < kQK5_0 / 2; ++j) {
    const int x0 = ((b.qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - 16;
    const int x1 = ((b.qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
    y[j] = x0 * d;
    y[j + kQK5_0 / 2] = x1 * d;
  }
}

// Packs 32 5-bit values into the low nibbles qs and the high-bit word qh.
void pack_q5(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
    h |= uint32_t(q[j] >> 4) << j;
    h |= uint32_t(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(qh, &h, 4);
}

// Symmetric like Q4_0: the value of largest magnitude maps to -16 exactly.
void quant_q5_0(const float* x, BlockQ5_0& b) {
  float amax = 0, max = 0;
  for (int j = 0; j < kQK5_0; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -16;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  uint8_t q[kQK5_0];
  for (int j = 0; j < kQK5_0; ++j) q[j] = round_up_clamp(x[j] * id + 16.0f, 31);
  pack_q5(q, b.qs, b.qh);
}

void dequant_q5_1(const BlockQ5_1& b, float* y) {
  const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < kQK5_1 / 2; ++j) {
    const int x0 = (b.qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10);
    const int x1 = (b.qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    y[j] = x0 * d + m;
    y[j + kQK5_1 / 2] = x1 * d + m;
  }
}

void quant_q5_1(const float* x, BlockQ5_1& b) {
  float lo, hi;
  min_max(x, kQK5_1, lo, hi);
  const float d = (hi - lo) / 31;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = fp32_to_fp16(d);
  b.m = fp32_to_fp16(lo);
  uint8_t q[kQK5_1];
  for (int j = 0; j < kQK5_1; ++j) q[j] = round_up_clamp((x[j] - lo) * id, 31);
  pack_q5(q, b.qs, b.qh);
}

// ---- IQ4_NL and IQ4_XS: a 16-value non-linear grid -------------------------------------------

// Index of the grid value nearest v (the lower one on a tie), by bisection of the sorted grid.
uint8_t nearest_iq4(float v) {
  if (v <= kValuesIq4nl[0]) return 0;
  if (v >= kValuesIq4nl[15]) return 15;
  int lo = 0, hi = 15;  // kValuesIq4nl[lo] < v < kValuesIq4nl[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < kValuesIq4nl[mid])
      hi = mid;
    else
      lo = mid;
  }
  return static_cast<uint8_t>(v - kValuesIq4nl[lo] <= kValuesIq4nl[hi] - v ? lo : hi);
}

// Scale d for x[j] ~ d * kValuesIq4nl[L[j]], minimising the x^2-weighted squared error: the
// element of largest magnitude is tried at either end of the (asymmetric) grid and at a few
// points near it, each followed by a least-squares solve for d. Returns 0 for an all-zero group.
float fit_iq4(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  if (amax < kGroupMaxEps) return 0.f;
  float best_d = 0, best = 0;  // best = sumqx^2 / sumq2, the error reduction of the fit
  auto fit = [&](float id) {
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < n; ++j) {
      const float q = kValuesIq4nl[nearest_iq4(id * x[j])], w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      best_d = sumqx / sumq2;
      best = best_d * sumqx;
    }
  };
  fit(127.f / max);  // the maximum at the positive end (113 after rounding to the grid)
  for (int t = -7; t <= 7; ++t) fit((t - 127.f) / max);  // at or near the negative end, -127
  return best_d;
}

void dequant_iq4_nl(const BlockIQ4_NL& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int j = 0; j < kQK4_NL / 2; ++j) {
    y[j] = d * kValuesIq4nl[b.qs[j] & 0xF];
    y[j + kQK4_NL / 2] = d * kValuesIq4nl[b.qs[j] >> 4];
  }
}

// 32 values against the decoded scale d into 16 bytes (low nibbles 0..15, high nibbles 16..31).
void pack_iq4(const float* x, float d, uint8_t* qs) {
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>(nearest_iq4(id * x[j]) | (nearest_iq4(id * x[j + 16]) << 4));
}

void quant_iq4_nl(const float* x, BlockIQ4_NL& b) {
  b.d = fp32_to_fp16(fit_iq4(x, kQK4_NL));
  pack_iq4(x, fp16_to_fp32(b.d), b.qs);
}

int iq4_xs_scale(const BlockIQ4_XS& b, int ib) {
  return ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4);
}

void dequant_iq4_xs(const BlockIQ4_XS& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int ib = 0; ib < kQK_K / 32; ++ib, y += 32) {
    const float dl = d * (iq4_xs_scale(b, ib) - 32);
    const uint8_t* qs = b.qs + 16 * ib;
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * kValuesIq4nl[qs[j] & 0xF];
      y[j + 16] = dl * kValuesIq4nl[qs[j] >> 4];
    }
  }
}

// Each 32-element sub-block's scale is fitted as in IQ4_NL, then coded in 6 bits (-32..31)
// against the super-block's largest one, which maps to -32.
void quant_iq4_xs(const float* x, BlockIQ4_XS& b) {
  float scales[8], max_scale = 0, amax = 0;
  for (int ib = 0; ib < 8; ++ib) {
    scales[ib] = fit_iq4(x + 32 * ib, 32);
    if (std::fabs(scales[ib]) > amax) {
      amax = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(&b, 0, sizeof(b));
  if (amax == 0) {  // d = 0 decodes to zeros
    std::memset(b.qs, 0x88, sizeof(b.qs));
    return;
  }
  b.d = fp32_to_fp16(max_scale / -32);
  const float d = fp16_to_fp32(b.d);
  const float id = d ? 1.0f / d : 0.0f;
  for (int ib = 0; ib < 8; ++ib) {
    const int l = clampi(nearest_int(id * scales[ib]), -32, 31) + 32;
    b.scales_l[ib / 2] |= static_cast<uint8_t>((l & 0xF) << (4 * (ib % 2)));
    b.scales_h = static_cast<uint16_t>(b.scales_h | ((l >> 4) << (2 * ib)));
    pack_iq4(x + 32 * ib, d * (l - 32), b.qs + 16 * ib);
  }
}

// ---- Q2_K, Q3_K, Q5_K --------------------------------------------------------------------------

void dequant_q2_k(const BlockQ2_K& b, float* y) {
  const float d = fp16_to_fp32(b.d), min = fp16_to_fp32(b.dmin);
  const uint8_t* q = b.qs;
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int h = 0; h < 2; ++h) {  // two sub-blocks of 16, each with its scale byte
        const uint8_t sc = b.scales[is++];
        const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[16 * h + l] >> shift) & 3) - ml;
      }
    }
  }
}

// 2-bit values packed four to a byte: element 128n + 32j + l is bits 2j.. of q[32n + l] (Q2_K, Q3_K).
void pack_2bit(const uint8_t* L, uint8_t* q) {
  for (int j = 0; j < kQK_K; j += 128, q += 32)
    for (int l = 0; l < 32; ++l)
      q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// 16 (scale, min) fits with values 0..3, weighted by |x|; both coded in 4 bits against the
// super-block maxima, and the values requantized against the decoded scales.
void quant_q2_k(const float* x, BlockQ2_K& b) {
  uint8_t L[kQK_K], Laux[16];
  float weights[16], mins[16], scales[16];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 15.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 15.f / max_min : 0.f;
  for (int j = 0; j < 16; ++j) {
    const int ls = clampi(nearest_int(inv_scale * scales[j]), 0, 15);
    const int lm = clampi(nearest_int(inv_min * mins[j]), 0, 15);
    b.scales[j] = static_cast<uint8_t>(ls | (lm << 4));
  }
  b.d = fp32_to_fp16(max_scale / 15.f);
  b.dmin = fp32_to_fp16(max_min / 15.f);
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_fp32(b.d) * (b.scales[j] & 0xF);
    if (!d) continue;
    const float dm = fp16_to_fp32(b.dmin) * (b.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + ii] + dm) / d), 0, 3));
  }
  pack_2bit(L, b.qs);
}

// The 6-bit scale i (0..15) of a Q3_K block, 0..63 (the value used is this minus 32).
int q3_k_scale(const uint8_t* s, int i) {
  return ((s[i % 8] >> (4 * (i / 8))) & 0xF) | (((s[8 + i % 4] >> (2 * (i / 4))) & 3) << 4);
}

void dequant_q3_k(const BlockQ3_K& b, float* y) {
  const float d_all = fp16_to_fp32(b.d);
  const uint8_t* q = b.qs;
  int is = 0;
  uint8_t m = 1;  // hmask bit of the current 32 elements
  for (int n = 0; n < kQK_K; n += 128, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int h = 0; h < 2; ++h) {
        const float dl = d_all * (q3_k_scale(b.scales, is++) - 32);
        for (int l = 0; l < 16; ++l) *y++ = dl * (((q[16 * h + l] >> shift) & 3) - ((b.hmask[16 * h + l] & m) ? 0 : 4));
      }
    }
  }
}

// 16 symmetric fits with values -4..3, the scales coded in 6 bits against the largest, which
// maps to -32; the values requantized against the decoded scales.
void quant_q3_k(const float* x, BlockQ3_K& b) {
  int8_t L[kQK_K];
  float scales[16], max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  std::memset(&b, 0, sizeof(b));
  if (amax >= kGroupMaxEps) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int l = clampi(nearest_int(iscale * scales[j]), -32, 31) + 32;
      b.scales[j % 8] |= static_cast<uint8_t>((l & 0xF) << (4 * (j / 8)));
      b.scales[8 + j % 4] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
    }
    b.d = fp32_to_fp16(1 / iscale);
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_fp32(b.d) * (q3_k_scale(b.scales, j) - 32);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
  }
  // Bit 2 of the value (0..7) goes to hmask, the low 2 bits to qs.
  uint8_t low[kQK_K];
  for (int j = 0; j < kQK_K; ++j) {
    if (L[j] > 3) b.hmask[j % 32] |= static_cast<uint8_t>(1 << (j / 32));
    low[j] = static_cast<uint8_t>(L[j] & 3);
  }
  pack_2bit(low, b.qs);
}

void dequant_q5_k(const BlockQ5_K& b, float* y) {
  const float d = fp16_to_fp32(b.d), min = fp16_to_fp32(b.dmin);
  const uint8_t* ql = b.qs;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, ql += 32) {
    uint8_t sc, m;
    get_scale_min_k4(is, b.scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b.scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

void quant_q5_k(const float* x, BlockQ5_K& b) {
  uint8_t L[kQK_K];
  quant_k_scale_min(x, 31, -0.5f, 15, b.scales, b.d, b.dmin, L);
  std::memset(b.qh, 0, sizeof(b.qh));
  uint8_t* ql = b.qs;
  for (int n = 0, c = 0; n < kQK_K; n += 64, ++c, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      const int l1 = L[n + j], l2 = L[n + j + 32];
      b.qh[j] |= static_cast<uint8_t>(((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
      ql[j] = static_cast<uint8_t>((l1 & 0xF) | ((l2 & 0xF) << 4));
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
    throw Error(ErrorKind::BadModel, std::string(what) + ": " + std::to_string(n) +
                                         " elements is not a multiple of the " + t->name + " block size " +
                                         std::to_string(t->block_size));
  return n / t->block_size;
}

}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t nb = check_row(type, n, "dequantize_row");
  const auto* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
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
    case GgmlType::Q4_1: return for_each_block_in<BlockQ4_1, kQK4_1>(src, dst, nb, dequant_q4_1);
    case GgmlType::Q5_0: return for_each_block_in<BlockQ5_0, kQK5_0>(src, dst, nb, dequant_q5_0);
    case GgmlType::Q5_1: return for_each_block_in<BlockQ5_1, kQK5_1>(src, dst, nb, dequant_q5_1);
    case GgmlType::IQ4_NL: return for_each_block_in<BlockIQ4_NL, kQK4_NL>(src, dst, nb, dequant_iq4_nl);
    case GgmlType::Q2_K: return for_each_block_in<BlockQ2_K, kQK_K>(src, dst, nb, dequant_q2_k);
    case GgmlType::Q3_K: return for_each_block_in<BlockQ3_K, kQK_K>(src, dst, nb, dequant_q3_k);
    case GgmlType::Q5_K: return for_each_block_in<BlockQ5_K, kQK_K>(src, dst, nb, dequant_q5_k);
    case GgmlType::IQ4_XS: return for_each_block_in<BlockIQ4_XS, kQK_K>(src, dst, nb, dequant_iq4_xs);
    default: break;
  }
  throw Error(ErrorKind::BadModel, std::string("dequantize_row: unsupported type ") + type_name(type));
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  const int64_t nb = check_row(type, n, "quantize_row");
  auto* p = static_cast<uint8_t*>(dst);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
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
    case GgmlType::Q4_1: return for_each_block_out<BlockQ4_1, kQK4_1>(src, dst, nb, quant_q4_1);
    case GgmlType::Q5_0: return for_each_block_out<BlockQ5_0, kQK5_0>(src, dst, nb, quant_q5_0);
    case GgmlType::Q5_1: return for_each_block_out<BlockQ5_1, kQK5_1>(src, dst, nb, quant_q5_1);
    case GgmlType::IQ4_NL: return for_each_block_out<BlockIQ4_NL, kQK4_NL>(src, dst, nb, quant_iq4_nl);
    case GgmlType::Q2_K: return for_each_block_out<BlockQ2_K, kQK_K>(src, dst, nb, quant_q2_k);
    case GgmlType::Q3_K: return for_each_block_out<BlockQ3_K, kQK_K>(src, dst, nb, quant_q3_k);
    case GgmlType::Q5_K: return for_each_block_out<BlockQ5_K, kQK_K>(src, dst, nb, quant_q5_k);
    case GgmlType::IQ4_XS: return for_each_block_out<BlockIQ4_XS, kQK_K>(src, dst, nb, quant_iq4_xs);
    default: break;
  }
  throw Error(ErrorKind::BadModel, std::string("quantize_row: unsupported type ") + type_name(type));
}

}  // namespace snapvk
