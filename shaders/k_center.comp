#version 450
// The rotated K types' centre of one layer: c = the mean of the first keys stored, per KV head
// (k [T, n_kv, HD], rotated). From then on the layer stores k - c (kv_store.comp). Attention and
// SnapKV's scores never add it back: q.(k - c) = q.k - q.c differs by the same amount for every
// key one query sees, which a softmax does not see (SageAttention's smoothing of K, arXiv
// 2410.02367). What all keys share no longer takes the quantizer's range: in SmolLM2 most of K's
// quantization error was that shared part.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer K { float k[]; };
layout(std430, binding = 1) writeonly buffer C { float c[]; };  // [n_kv, HD]
layout(push_constant) uniform PC { uint T; uint n; } pc;         // n = n_kv * HD

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n) return;
  const uint rows = min(pc.T, SNAPVK_K_CENTER_ROWS);
  float s = 0.0;
  for (uint t = 0; t < rows; ++t) s += k[t * pc.n + i];
  c[i] = s / float(rows);
}
