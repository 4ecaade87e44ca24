#version 450
// y[t, :] = E[ids[t], :]: the token-embedding lookup, dequantizing the table's stored type.
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform PC { uint n; uint rows; } pc;

void main() {
  const uint t = flat_workgroup();
  if (t >= pc.rows) return;
  const uint src = uint(ids[t]) * pc.n;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) y[t * pc.n + i] = w_load(src + i);
}
