#version 450
// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w: one workgroup per row.
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint n; uint rows; float eps; } pc;

void main() {
  const uint row = flat_workgroup();
  if (row >= pc.rows) return;
  const uint base = row * pc.n;
  float ss = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) ss += x[base + i] * x[base + i];
  ss = workgroup_sum(ss);
  const float scale = inversesqrt(ss / float(pc.n) + pc.eps);
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) y[base + i] = x[base + i] * scale * w[i];
}
