#version 450
// Merges attn_decode's per-split partials of one query head: rescale each split by
// exp(m_s - M) and normalise by the rescaled sum.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(std430, binding = 0) readonly buffer P { float part[]; };  // [n_head][n_split][HD + 2]
layout(std430, binding = 1) writeonly buffer O { float o[]; };    // [n_head, HD]
layout(push_constant) uniform PC { uint n_split; } pc;

void main() {
  const uint h = gl_WorkGroupID.x;
  const uint base = h * pc.n_split * (HD + 2u);
  float M = -1.0 / 0.0;
  for (uint s = 0; s < pc.n_split; ++s) M = max(M, part[base + s * (HD + 2u) + HD]);
  for (uint d = gl_LocalInvocationID.x; d < HD; d += gl_WorkGroupSize.x) {
    float num = 0.0, den = 0.0;
    for (uint s = 0; s < pc.n_split; ++s) {
      const float m = part[base + s * (HD + 2u) + HD];
      if (m == -1.0 / 0.0) continue;  // an empty split
      const float w = exp(m - M);
      num += part[base + s * (HD + 2u) + d] * w;
      den += part[base + s * (HD + 2u) + HD + 1u] * w;
    }
    o[h * HD + d] = num / den;
  }
}
