#version 450
// y = silu(gate) * up, the SwiGLU feed-forward activation; with GELU defined (geglu), y =
// gelu(gate) * up with GELU's tanh approximation (ggml_gelu, Gemma's gelu_pytorch_tanh):
// 0.5 x (1 + tanh(z)) = x / (1 + exp(-2z)), z = sqrt(2/pi) (x + 0.044715 x^3), which cannot
// produce NaN for large |x| (exp overflows to inf, and x / inf = 0).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint n; } pc;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (i >= pc.n) return;
  const float a = g[i];
#if defined(GELU)
  const float z = 0.7978845608 * (a + 0.044715 * a * a * a);
  y[i] = a / (1.0 + exp(-2.0 * z)) * u[i];
#else
  y[i] = a / (1.0 + exp(-a)) * u[i];
#endif
}
