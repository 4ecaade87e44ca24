#version 450
// Rotary position embedding, in place on x [T, n_heads, head_dim] and, in the same dispatch, on y
// [T, y_heads, head_dim] (a layer's q and k); row t has position pos0 + t.
// mode 0 rotates adjacent pairs (2i, 2i+1) as llama.cpp's NORM type (llama); mode 2 rotates
// (i, i + n_rot/2) as its NEOX type (qwen2). Dimensions >= n_rot pass through. Optional
// per-frequency divisors (Llama 3 rope_freqs) come from binding 1 when has_factors is set.
// freq_scale is linear RoPE scaling (llama.cpp's freq_scale = 1 / rope.scaling.factor).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer F { float factors[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(push_constant) uniform PC {
  uint T; uint n_heads; uint head_dim; uint n_rot; uint pos0; float freq_base; uint mode; uint has_factors;
  float freq_scale; uint y_heads;
} pc;

// The pair of pair index i of a row starting at base, and its angle's cosine and sine at position p.
void pair(uint i, uint base, uint p, out uint a, out uint b, out vec2 cs) {
  const uint half_rot = pc.n_rot / 2u;
  float theta = float(p) * pc.freq_scale * pow(pc.freq_base, -float(2u * i) / float(pc.n_rot));
  if (pc.has_factors != 0u) theta /= factors[i];
  cs = vec2(cos(theta), sin(theta));
  a = pc.mode == 2u ? base + i : base + 2u * i;
  b = pc.mode == 2u ? base + i + half_rot : base + 2u * i + 1u;
}

void main() {
  const uint half_rot = pc.n_rot / 2u;
  uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  const uint in_x = pc.T * pc.n_heads * half_rot;
  if (idx >= in_x + pc.T * pc.y_heads * half_rot) return;
  const bool is_x = idx < in_x;
  if (!is_x) idx -= in_x;
  const uint i = idx % half_rot;
  const uint row = idx / half_rot;  // t * heads + head
  const uint heads = is_x ? pc.n_heads : pc.y_heads;
  uint a, b;
  vec2 cs;
  pair(i, row * pc.head_dim, pc.pos0 + row / heads, a, b, cs);
  if (is_x) {
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
  } else {
    const float y0 = y[a], y1 = y[b];
    y[a] = y0 * cs.x - y1 * cs.y;
    y[b] = y0 * cs.y + y1 * cs.x;
  }
}
