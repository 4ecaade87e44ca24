#version 450
// SnapKV step 6: in each segment (a KV head's pooled scores over the prefix, or for Ada-KV all
// heads of a layer at once) select the `count` largest scores, ties to the lower position, and
// write their positions in ascending order. One workgroup per segment, O(length) work: a
// 4-pass radix select (8 bits a pass) on order-preserving integer keys finds the count-th
// largest key T; every key > T is taken, and of the keys == T the lowest positions fill the
// rest; a scan over per-invocation counts gives each selected position its output index.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer S { float scores[]; };  // [segments][seg_len]
layout(std430, binding = 1) writeonly buffer O { uint sel[]; };     // [segments][count]
layout(push_constant) uniform PC { uint seg_len; uint count; } pc;

shared uint hist[256];
shared uint s_prefix, s_remaining;
shared uint gt_scan[SNAPVK_MAX_WG], eq_scan[SNAPVK_MAX_WG];

// Monotonic map from float to uint: larger float, larger key.
uint key_of(float f) {
  const uint b = floatBitsToUint(f);
  return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

void main() {
  const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
  const uint base = gl_WorkGroupID.x * pc.seg_len;
  const uint out_base = gl_WorkGroupID.x * pc.count;
  if (pc.count == 0u) return;
  if (pc.count >= pc.seg_len) {  // everything is kept
    for (uint j = tid; j < pc.seg_len; j += WG) sel[out_base + j] = j;
    return;
  }

  uint prefix = 0u, mask = 0u, remaining = pc.count;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (uint b = tid; b < 256u; b += WG) hist[b] = 0u;
    barrier();
    // SNAPVK_TOPK_UNROLL keys per rolled iteration: llvmpipe stops an invocation's loops after
    // 65535 iterations, and Ada-KV's layer-wide segment holds millions of keys.
    for (uint j0 = tid; j0 < pc.seg_len; j0 += WG * SNAPVK_TOPK_UNROLL) {
      [[unroll]] for (uint u = 0u; u < SNAPVK_TOPK_UNROLL; ++u) {
        const uint j = j0 + u * WG;
        if (j < pc.seg_len) {
          const uint k = key_of(scores[base + j]);
          if ((k & mask) == prefix) atomicAdd(hist[(k >> uint(shift)) & 0xFFu], 1u);
        }
      }
    }
    barrier();
    if (tid == 0u) {
      uint above = 0u, b = 255u;
      while (above + hist[b] < remaining) above += hist[b--];  // terminates: the bins hold >= remaining
      s_prefix = prefix | (b << uint(shift));
      s_remaining = remaining - above;
    }
    barrier();
    prefix = s_prefix;
    remaining = s_remaining;
    mask |= 0xFFu << uint(shift);
    barrier();
  }
  // prefix is now the key T of the count-th largest score; `remaining` of the keys equal to T are taken.
  const uint per = (pc.seg_len + WG - 1u) / WG;
  const uint a = min(tid * per, pc.seg_len), e = min(a + per, pc.seg_len);
  uint gt = 0u, eq = 0u;
  for (uint j0 = a; j0 < e; j0 += SNAPVK_TOPK_UNROLL) {
    [[unroll]] for (uint u = 0u; u < SNAPVK_TOPK_UNROLL; ++u) {
      const uint j = j0 + u;
      if (j < e) {
        const uint k = key_of(scores[base + j]);
        gt += k > prefix ? 1u : 0u;
        eq += k == prefix ? 1u : 0u;
      }
    }
  }
  gt_scan[tid] = gt;
  eq_scan[tid] = eq;
  barrier();
  if (tid == 0u) {  // exclusive scans; WG is small next to seg_len
    uint g = 0u, q = 0u;
    for (uint t = 0u; t < WG; ++t) {
      const uint tg = gt_scan[t], tq = eq_scan[t];
      gt_scan[t] = g;
      eq_scan[t] = q;
      g += tg;
      q += tq;
    }
  }
  barrier();
  uint eq_before = eq_scan[tid];
  uint idx = gt_scan[tid] + min(eq_before, remaining);
  for (uint j0 = a; j0 < e; j0 += SNAPVK_TOPK_UNROLL) {
    [[unroll]] for (uint u = 0u; u < SNAPVK_TOPK_UNROLL; ++u) {
      const uint j = j0 + u;
      if (j < e) {
        const uint k = key_of(scores[base + j]);
        bool take = k > prefix;
        if (k == prefix) {
          take = eq_before < remaining;
          ++eq_before;
        }
        if (take) sel[out_base + idx++] = j;
      }
    }
  }
}
