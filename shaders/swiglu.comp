#version 450
// y = silu(gate) * up, the SwiGLU feed-forward activation; with GELU defined (geglu), y =
// gelu(gate) * up (act.glsl).
#include "common.glsl"
#include "act.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint n; } pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= pc.n) return;
#if defined(GELU)
  y[i] = gelu_tanh(g[i]) * u[i];
#else
  y[i] = silu(g[i]) * u[i];
#endif
}
