// Non-uniform quantization grids, looked up with selects and shifts rather than an indexed
// constant array: lavapipe would rebuild such an array per invocation, and GPUs keep the words
// in registers. Shared by weights (weights.glsl) and the KV cache (kv.glsl, kv_store.comp).
#include "kv_format.h"

// ggml's kvalues_iq4nl, the grid a 4-bit index selects (-127, -104, -83, -65, -49, -35, -22,
// -10, 1, 13, 25, 38, 53, 69, 89, 113), as int8 bytes of four words.
const uint IQ4NL_0 = 0xBFAD9881u, IQ4NL_1 = 0xF6EADDCFu, IQ4NL_2 = 0x26190D01u, IQ4NL_3 = 0x71594535u;
vec4 iq4nl4(uvec4 q) {  // q: four indices 0..15
  const bvec4 b2 = notEqual(q & 4u, uvec4(0u)), b3 = notEqual(q & 8u, uvec4(0u));
  const uvec4 w = mix(mix(uvec4(IQ4NL_0), uvec4(IQ4NL_1), b2), mix(uvec4(IQ4NL_2), uvec4(IQ4NL_3), b2), b3);
  return vec4(ivec4(w << (24u - 8u * (q & 3u))) >> 24);
}

// The rotated KV types' symmetric grids (kv_format.h): a code is a sign bit above a magnitude
// index; the value is in units of the block's scale.
vec4 hq4_grid(uvec4 q) {  // q: four codes 0..15
  const uvec4 w = mix(uvec4(SNAPVK_HQ4_MAG_LO), uvec4(SNAPVK_HQ4_MAG_HI), notEqual(q & 4u, uvec4(0u)));
  const vec4 m = vec4((w >> (8u * (q & 3u))) & 0xFFu);
  return mix(m, -m, notEqual(q & 8u, uvec4(0u)));
}
vec4 hq3_grid(uvec4 q) {  // q: four codes 0..7
  const vec4 m = vec4((uvec4(SNAPVK_HQ3_MAG) >> (8u * (q & 3u))) & 0xFFu);
  return mix(m, -m, notEqual(q & 4u, uvec4(0u)));
}
