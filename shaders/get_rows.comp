#version 450
// y[t, :] = E[ids[t], :]: the token-embedding lookup, dequantizing the table's stored type.
#include "common.glsl"
#include "weights.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
// This dispatch binds the table's rows row0 .. row0 + table_rows - 1 (a large table is split).
layout(push_constant) uniform PC { uint n; uint rows; uint row0; uint table_rows; } pc;

void main() {
  const uint t = flat_workgroup();
  if (t >= pc.rows) return;
  const uint id = uint(ids[t]);
  if (id < pc.row0 || id - pc.row0 >= pc.table_rows) return;  // another slice's row
  const uint src = (id - pc.row0) * pc.n;
  for (uint i = gl_LocalInvocationID.x; i < pc.n; i += gl_WorkGroupSize.x) y[t * pc.n + i] = w_load(src + i);
}
