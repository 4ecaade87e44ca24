#version 450
// Writes K or V rows src [T, n_kv, head_dim] (f32) into a cache [n_kv][cap][head_dim] of the
// cache's type, row t of head h at slot base[h] + slot0 + t. base[] holds per-head lengths of a
// compacted cache (all zero for a full cache), so decode appends after each head's entries.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer Src { float src[]; };
#if defined(KV_F32)
layout(std430, binding = 1) writeonly buffer Dst { float dst[]; };
#else
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
#endif
layout(std430, binding = 2) readonly buffer Base { uint base[]; };
layout(push_constant) uniform PC { uint T; uint n_kv; uint head_dim; uint cap; uint slot0; } pc;

void main() {
  const uint pairs = pc.head_dim / 2u;
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.T * pc.n_kv * pairs) return;
  const uint p = idx % pairs;
  const uint h = (idx / pairs) % pc.n_kv;
  const uint t = idx / (pairs * pc.n_kv);
  const uint s = (t * pc.n_kv + h) * pc.head_dim + 2u * p;
  const uint d = (h * pc.cap + base[h] + pc.slot0 + t) * pc.head_dim + 2u * p;
#if defined(KV_F32)
  dst[d] = src[s];
  dst[d + 1u] = src[s + 1u];
#else
  dst[d >> 1] = packHalf2x16(vec2(src[s], src[s + 1u]));
#endif
}
