#version 450
// Ada-KV: turns the layer-wide selection (ascending indices into [n_kv][P]) into per-head
// budgets, the compacted cache's heads table (offset, retained count = budget + window) and
// where each head's positions start in the selection. One invocation: n_kv is small.
#include "common.glsl"
layout(local_size_x = 1) in;
layout(std430, binding = 0) readonly buffer S { uint sel[]; };      // [total], ascending
layout(std430, binding = 1) writeonly buffer H { uint heads[]; };   // [n_kv][2]: offset, base
layout(std430, binding = 2) writeonly buffer I { uint info[]; };    // [n_kv][2]: start in sel, value offset
layout(push_constant) uniform PC { uint n_kv; uint P; uint total; uint window; uint room; } pc;

uint lower_bound(uint v) {
  uint lo = 0u, hi = pc.total;
  while (lo < hi) {
    const uint mid = (lo + hi) / 2u;
    if (sel[mid] < v) lo = mid + 1u; else hi = mid;
  }
  return lo;
}

void main() {
  uint offset = 0u;
  for (uint h = 0u; h < pc.n_kv; ++h) {
    const uint start = lower_bound(h * pc.P), end = lower_bound((h + 1u) * pc.P);
    const uint base = end - start + pc.window;
    heads[2u * h] = offset;
    heads[2u * h + 1u] = base;
    info[2u * h] = start;
    info[2u * h + 1u] = h * pc.P;
    offset += base + pc.room;
  }
}
