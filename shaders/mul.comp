#version 450
// c[i] = a[i] * b[i % nb]: SwiGLU gating (nb = n) and per-channel scales broadcast over rows (nb = row width).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform PC { uint n; uint nb; } pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= pc.n) return;
  c[i] = a[i] * b[i % pc.nb];
}
