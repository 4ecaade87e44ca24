#version 450
// A kept piece of a word or number brings the rest of it (docs/fidelity.md): each position takes
// the best pooled score of the positions of its word, at most `reach` tokens either way. A
// tokenizer that writes 99360 as five tokens otherwise lets top-K keep "993" and drop "60", and
// the copy stops short. words[j] = 1 where token j continues the word of token j - 1 (the host
// reads it from the tokenizer); a word is a run of such positions after its first.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer S { float scores[]; };  // [n_kv][P]
layout(std430, binding = 1) readonly buffer C { uint words[]; };    // [P]
layout(std430, binding = 2) writeonly buffer O { float outs[]; };   // [n_kv][P]
layout(push_constant) uniform PC { uint P; uint n_kv; uint reach; } pc;

void main() {
  const uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  if (idx >= pc.P * pc.n_kv) return;
  const uint h = idx / pc.P, j = idx % pc.P, row = h * pc.P;
  float s = scores[row + j];
  // back to the word's first token
  for (uint t = j, r = 0; r < pc.reach && t > 0 && words[t] != 0u; ++r) s = max(s, scores[row + --t]);
  // on to its last
  for (uint t = j + 1, r = 0; r < pc.reach && t < pc.P && words[t] != 0u; ++r, ++t) s = max(s, scores[row + t]);
  outs[idx] = s;
}
