#version 450
// The rotated KV types' transform, in place on rows x [n_rows, HD] (a head's q, k, v or
// attention output each): y = H S x / sqrt(N) on each aligned block of N values (N = HD's
// largest power-of-two divisor: all of a power-of-two head), H the N x N Walsh-Hadamard matrix
// and S the fixed sign flips SNAPVK_KV_ROT_SIGN. It is orthogonal, so q.k is unchanged when
// both are rotated, and it spreads a few large channels over the whole block, which low-bit
// block quantization handles far better (QuaRot, arXiv 2404.00456). inverse = 1 applies the
// transpose, S H / sqrt(N): a weighted sum of rotated values back to the model's basis.
// One workgroup of HD / 2 invocations per row; each stage pairs values h apart in shared memory.
#include "common.glsl"
#include "kv_format.h"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint N = 64;  // the block the transform mixes
layout(std430, binding = 0) buffer X { float x[]; };
layout(push_constant) uniform PC { uint n_rows; uint inverse; } pc;

shared float xs[HD];

void main() {
  const uint row = flat_workgroup(), t = gl_LocalInvocationID.x;
  if (row >= pc.n_rows) return;  // the whole workgroup: no barrier is skipped by some
  const uint base = row * HD;
  const float norm = inversesqrt(float(N));
  [[unroll]] for (uint e = 0; e < 2u; ++e) {
    const uint i = t + e * (HD / 2u);
    const float s = pc.inverse == 0u && SNAPVK_KV_ROT_SIGN(i % N) != 0u ? -1.0 : 1.0;
    xs[i] = x[base + i] * s;
  }
  barrier();
  [[unroll]] for (uint h = 1u; h < N; h <<= 1) {
    const uint i = (t / h) * 2u * h + t % h;
    const float a = xs[i], b = xs[i + h];
    xs[i] = a + b;
    xs[i + h] = a - b;
    barrier();
  }
  [[unroll]] for (uint e = 0; e < 2u; ++e) {
    const uint i = t + e * (HD / 2u);
    const float s = pc.inverse != 0u && SNAPVK_KV_ROT_SIGN(i % N) != 0u ? -1.0 : 1.0;
    x[base + i] = xs[i] * norm * s;
  }
}
