#version 450
// Y[m, n] = sum_k X[m, k] * W[n, k]: the prefill projection of M tokens at once. Rows of Y lie ldy
// floats apart, so that a dispatch can write a slice of the columns (an LM head split by rows).
// Tiled: each workgroup stages a BM x BK tile of X and a BN x BK tile of W in shared memory
// (W converted to f32 on load), and each invocation accumulates a TM x TN block in registers.
// The loops within a tile are unrolled (constant trip counts), so an invocation's loop
// iterations are K / BK: llvmpipe stops every loop of an invocation after 65535 iterations in
// all (host/kernels/loop_bounds.h), which the rolled ones reached at K ~ 37,000.
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
const uint TM = 4;
const uint TN = 4;
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint M; uint N; uint K; uint ldy; } pc;

shared float xs[BK * BM];  // [k][m]: a thread reads TM consecutive m
shared float ws[BK * BN];  // [k][n]
const uint X_PER_THREAD = (BM * BK + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;
const uint W_PER_THREAD = (BN * BK + gl_WorkGroupSize.x - 1) / gl_WorkGroupSize.x;

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint WG = gl_WorkGroupSize.x;  // = (BM / TM) * (BN / TN), set by the host
  const uint m0 = gl_WorkGroupID.y * BM;
  const uint n0 = gl_WorkGroupID.x * BN;
  const uint tn = tid % (BN / TN);
  const uint tm = tid / (BN / TN);

  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  for (uint k0 = 0; k0 < pc.K; k0 += BK) {
    [[unroll]] for (uint i = 0; i < X_PER_THREAD; ++i) {
      const uint e = tid + i * WG;
      if (e < BM * BK) {
        const uint mm = e / BK, kk = e % BK;
        const uint gm = m0 + mm, gk = k0 + kk;
        xs[kk * BM + mm] = (gm < pc.M && gk < pc.K) ? x[gm * pc.K + gk] : 0.0;
      }
    }
    [[unroll]] for (uint i = 0; i < W_PER_THREAD; ++i) {
      const uint e = tid + i * WG;
      if (e < BN * BK) {
        const uint nn = e / BK, kk = e % BK;
        const uint gn = n0 + nn, gk = k0 + kk;
        ws[kk * BN + nn] = (gn < pc.N && gk < pc.K) ? w_load(gn * pc.K + gk) : 0.0;
      }
    }
    barrier();
    [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
      [[unroll]] for (uint i = 0; i < TM; ++i) a[i] = xs[kk * BM + tm * TM + i];
      [[unroll]] for (uint j = 0; j < TN; ++j) b[j] = ws[kk * BN + tn * TN + j];
      [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    const uint gm = m0 + tm * TM + i;
    if (gm >= pc.M) continue;
    [[unroll]] for (uint j = 0; j < TN; ++j) {
      const uint gn = n0 + tn * TN + j;
      if (gn < pc.N) y[gm * pc.ldy + gn] = acc[i][j];
    }
  }
}
