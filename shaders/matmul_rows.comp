#version 450
// Y[m, n] = sum_k X[m, k] * W[n, k], for SIMD CPUs (lavapipe): each invocation owns a TM x TN
// block of outputs and reads X and W directly (the CPU caches do what shared memory does on a
// GPU), four k at a time. On lavapipe every non-uniform load is a per-invocation scalar loop,
// so what counts is loads per multiply: one vec4 load brings 4 values, and each loaded vec4
// feeds TN (or TM) dot products. GPUs use the tiled matmul.comp (these loads would not coalesce).
// Needs K % 4 == 0 (op_matmul falls back to matmul.comp otherwise).
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 4;  // token rows per invocation
const uint TN = 4;                          // output columns per invocation
layout(std430, binding = 1) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint M; uint N; uint K; } pc;

// Four consecutive weights starting at element i (i % 4 == 0).
#if defined(W_F32)
layout(std430, binding = 0) readonly buffer W4 { vec4 w4[]; };
vec4 w_load4(uint i) { return w4[i >> 2]; }
#elif defined(W_F16)
layout(std430, binding = 0) readonly buffer W2 { uvec2 w2[]; };
vec4 w_load4(uint i) {
  const uvec2 v = w2[i >> 2];
  return vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
}
#elif defined(W_BF16)
layout(std430, binding = 0) readonly buffer W2 { uvec2 w2[]; };
vec4 w_load4(uint i) {
  const uvec2 v = w2[i >> 2];
  return vec4(uintBitsToFloat(v.x << 16), uintBitsToFloat(v.x & 0xFFFF0000u), uintBitsToFloat(v.y << 16),
              uintBitsToFloat(v.y & 0xFFFF0000u));
}
#elif defined(W_Q8_0)
vec4 w_load4(uint i) {
  const uint blk = (i / 32u) * 34u, o = blk + 2u + i % 32u;  // o is even
  uint q = wdata[o >> 2];
  if ((o & 2u) != 0u) q = (q >> 16) | (wdata[(o >> 2) + 1u] << 16);
  const ivec4 b = ivec4(int(q << 24) >> 24, int(q << 16) >> 24, int(q << 8) >> 24, int(q) >> 24);
  return vec4(b) * w_half(blk);
}
#else
vec4 w_load4(uint i) { return vec4(w_load(i), w_load(i + 1u), w_load(i + 2u), w_load(i + 3u)); }
#endif

void main() {
  const uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
  const uint m0 = gl_WorkGroupID.y * TM;
  const uint K4 = pc.K / 4u;
  // Rows and columns past the end read the last one: in bounds, never written.
  uint xb[TM], wb[TN];
  [[unroll]] for (uint i = 0; i < TM; ++i) xb[i] = min(m0 + i, pc.M - 1u) * K4;
  [[unroll]] for (uint j = 0; j < TN; ++j) wb[j] = min(n0 + j, pc.N - 1u) * pc.K;
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  for (uint k4 = 0; k4 < K4; ++k4) {
    vec4 a[TM], b[TN];
    [[unroll]] for (uint i = 0; i < TM; ++i) a[i] = x4[xb[i] + k4];
    [[unroll]] for (uint j = 0; j < TN; ++j) b[j] = w_load4(wb[j] + 4u * k4);
    [[unroll]] for (uint i = 0; i < TM; ++i)
      [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] += dot(a[i], b[j]);
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    if (m0 + i >= pc.M) break;
    [[unroll]] for (uint j = 0; j < TN; ++j)
      if (n0 + j < pc.N) y[(m0 + i) * pc.N + n0 + j] = acc[i][j];
  }
}
