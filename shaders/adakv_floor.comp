#version 450
// Ada-KV's safeguard: every position that a head's own top-(floor) selection chose gets score
// +inf, so the layer-wide selection that follows gives each head at least `floor` entries.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer S { float scores[]; };          // [n_kv][P], in place
layout(std430, binding = 1) readonly buffer F { uint floor_sel[]; };  // [n_kv][floor]
layout(push_constant) uniform PC { uint P; uint n_kv; uint floor_count; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x;
  if (idx >= pc.n_kv * pc.floor_count) return;
  const uint h = idx / pc.floor_count;
  scores[h * pc.P + floor_sel[idx]] = uintBitsToFloat(0x7F800000u);
}
