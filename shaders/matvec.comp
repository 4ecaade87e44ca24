#version 450
// y[r] = dot(W[r, :], x) for NUM_ROWS rows per workgroup: the decode-time projection.
// Every invocation strides over K, so a warp reads consecutive weights (coalesced on GPUs,
// contiguous SIMD lanes on lavapipe); x is reused across the workgroup's rows.
#include "common.glsl"
#include "reduce.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NUM_ROWS = 2;
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint K; uint N; } pc;

void main() {
  const uint r0 = flat_workgroup() * NUM_ROWS;
  if (r0 >= pc.N) return;
  float acc[NUM_ROWS];
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) acc[r] = 0.0;
#if defined(W_F16)
  if ((pc.K & 1u) == 0) {  // even rows start on a pair boundary: read two halves per load
    const uint K2 = pc.K >> 1;
    for (uint i = gl_LocalInvocationID.x; i < K2; i += gl_WorkGroupSize.x) {
      const vec2 xv = vec2(x[2 * i], x[2 * i + 1]);
      [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
        const uint row = min(r0 + r, pc.N - 1);
        acc[r] += dot(unpackHalf2x16(wdata[row * K2 + i]), xv);
      }
    }
  } else
#endif
  {
    for (uint i = gl_LocalInvocationID.x; i < pc.K; i += gl_WorkGroupSize.x) {
      const float xv = x[i];
      [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
        const uint row = min(r0 + r, pc.N - 1);
        acc[r] += w_load(row * pc.K + i) * xv;
      }
    }
  }
  [[unroll]] for (uint r = 0; r < NUM_ROWS; ++r) {
    const float s = workgroup_sum(acc[r]);
    if (gl_LocalInvocationID.x == 0 && r0 + r < pc.N) y[r0 + r] = s;
  }
}
