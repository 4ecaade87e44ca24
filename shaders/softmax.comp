#version 450
// y[r, :] = softmax(scale * x[r, :]) in fp32: one workgroup per row.
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint n; uint rows; float scale; } pc;

void main() {
  const uint row = flat_workgroup();
  if (row >= pc.rows) return;
  const uint base = row * pc.n;
  float m = -1.0 / 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) m = max(m, pc.scale * x[base + i]);
  m = workgroup_max(m);
  float s = 0.0;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) s += exp(pc.scale * x[base + i] - m);
  s = workgroup_sum(s);
  const float inv = 1.0 / s;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) y[base + i] = exp(pc.scale * x[base + i] - m) * inv;
}
