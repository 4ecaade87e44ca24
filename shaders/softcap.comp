#version 450
// x = cap * tanh(x / cap), in place: final logit soft-capping (Gemma 2; Gemma 3 files that
// declare final_logit_softcapping). tanh(v) = 1 - 2 / (exp(2v) + 1) stays finite for any v.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(push_constant) uniform PC { uint n; float cap; } pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= pc.n) return;
  const float v = x[i] / pc.cap;
  x[i] = pc.cap * (1.0 - 2.0 / (exp(2.0 * v) + 1.0));
}
