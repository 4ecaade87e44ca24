#version 450
// Rotary position embedding, in place on x [T, n_heads, head_dim]; row t has position pos0 + t.
// mode 0 rotates adjacent pairs (2i, 2i+1) as llama.cpp's NORM type (llama); mode 2 rotates
// (i, i + n_rot/2) as its NEOX type (qwen2). Dimensions >= n_rot pass through. Optional
// per-frequency divisors (Llama 3 rope_freqs) come from binding 1 when has_factors is set.
// freq_scale is linear RoPE scaling (llama.cpp's freq_scale = 1 / rope.scaling.factor).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer F { float factors[]; };
layout(push_constant) uniform PC {
  uint T; uint n_heads; uint head_dim; uint n_rot; uint pos0; float freq_base; uint mode; uint has_factors;
  float freq_scale;
} pc;

void main() {
  const uint half_rot = pc.n_rot / 2u;
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.T * pc.n_heads * half_rot) return;
  const uint i = idx % half_rot;
  const uint row = idx / half_rot;  // t * n_heads + head
  const uint t = row / pc.n_heads;
  float theta = float(pc.pos0 + t) * pc.freq_scale * pow(pc.freq_base, -float(2u * i) / float(pc.n_rot));
  if (pc.has_factors != 0u) theta /= factors[i];
  const float c = cos(theta), s = sin(theta);
  const uint base = row * pc.head_dim;
  const uint a = pc.mode == 2u ? base + i : base + 2u * i;
  const uint b = pc.mode == 2u ? base + i + half_rot : base + 2u * i + 1u;
  const float x0 = x[a], x1 = x[b];
  x[a] = x0 * c - x1 * s;
  x[b] = x0 * s + x1 * c;
}
