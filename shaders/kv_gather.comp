#version 450
// SnapKV step 7: copy the retained rows of one layer from the full (transient) K/V into the
// compacted cache: head h's slot i < count_h takes prompt position sel[start_h + i] - sub_h,
// and the last W slots take the window positions P .. P+W-1 (P = L - W). Rows are copied as
// 32-bit words, whatever the cache types (K rows k_words long, V rows v_words). One invocation
// per word of the longer row.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer SK { uint src_k[]; };
layout(std430, binding = 1) readonly buffer SV { uint src_v[]; };
layout(std430, binding = 2) writeonly buffer DK { uint dst_k[]; };
layout(std430, binding = 3) writeonly buffer DV { uint dst_v[]; };
layout(std430, binding = 4) readonly buffer Sel { uint sel[]; };
layout(std430, binding = 5) readonly buffer I { uint info[]; };     // [n_kv][2]: start in sel, value offset
#define HEADS_BINDING 6
#include "heads.glsl"                                                // of the compacted cache
layout(push_constant) uniform PC { uint n_kv; uint k_words; uint v_words; uint max_slots; uint src_stride; uint P; uint window; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  const uint row_words = max(pc.k_words, pc.v_words);
  if (idx >= pc.n_kv * pc.max_slots * row_words) return;
  const uint w = idx % row_words;
  const uint i = (idx / row_words) % pc.max_slots;
  const uint h = idx / (row_words * pc.max_slots);
  const uint base = head_base(h);
  if (i >= base) return;
  const uint count = base - pc.window;
  const uint pos = i < count ? sel[info[2u * h] + i] - info[2u * h + 1u] : pc.P + (i - count);
  const uint src = h * pc.src_stride + pos, dst = head_offset(h) + i;
  if (w < pc.k_words) dst_k[dst * pc.k_words + w] = src_k[src * pc.k_words + w];
  if (w < pc.v_words) dst_v[dst * pc.v_words + w] = src_v[src * pc.v_words + w];
}
