#version 450
// A kept piece of a word or number brings the rest of it (docs/fidelity.md): each position takes
// the best pooled score of the positions of its word, at most `reach` tokens either way. A
// tokenizer that writes 99360 as five tokens otherwise lets top-K keep "993" and drop "60", and
// the copy stops short. words[j] numbers the word of token j (the host numbers them from the
// tokenizer's word continuations), so two positions share a word when they share the number.
// A reach longer than one invocation may loop (llvmpipe stops every loop of an invocation after
// 65535 iterations in all: host/kernels/loop_bounds.h) is taken in passes: pass (r_begin, r_end]
// of the steps either way starts from what the passes before left in outs.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer S { float scores[]; };  // [n_kv][P]
layout(std430, binding = 1) readonly buffer C { uint words[]; };    // [P]: the word of each position
layout(std430, binding = 2) buffer O { float outs[]; };             // [n_kv][P]
layout(push_constant) uniform PC { uint P; uint n_kv; uint r_begin; uint r_end; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.P * pc.n_kv) return;
  const uint h = idx / pc.P, j = idx % pc.P, row = h * pc.P, word = words[j];
  float s = pc.r_begin == 0u ? scores[row + j] : outs[idx];
  // back towards the word's first token
  for (uint r = pc.r_begin + 1u; r <= pc.r_end && r <= j && words[j - r] == word; ++r) s = max(s, scores[row + j - r]);
  // on towards its last
  for (uint r = pc.r_begin + 1u; r <= pc.r_end && j + r < pc.P && words[j + r] == word; ++r) s = max(s, scores[row + j + r]);
  outs[idx] = s;
}
