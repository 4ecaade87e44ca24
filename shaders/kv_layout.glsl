// Where a KV row's parts lie, in 32-bit words, by type (kv_format.h; the layouts are described
// in kv.glsl). Needs HD (head_dim) declared before the include.
#include "kv_format.h"

const uint KV_B = HD / 32u;  // blocks per row
uint kv_row_words(const uint t) {
  if (t == SNAPVK_KV_F32) return HD;
  if (t == SNAPVK_KV_F16 || t == SNAPVK_KV_BF16) return HD / 2u;
  if (t == SNAPVK_KV_Q8_0) return HD / 4u + (KV_B + 1u) / 2u;
  if (t == SNAPVK_KV_Q4_1) return HD / 8u + KV_B;
  if (t == SNAPVK_KV_Q5_0) return HD / 8u + KV_B + (KV_B + 1u) / 2u;
  if (t == SNAPVK_KV_Q5_1) return HD / 8u + 2u * KV_B;
  if (t == SNAPVK_KV_HQ3) return HD / 16u + KV_B + (KV_B + 1u) / 2u;
  return HD / 8u + (KV_B + 1u) / 2u;  // q4_0, iq4_nl, hq4
}
// The first word of the scales, and of the high bits (q5_0, q5_1, hq3).
uint kv_high_words(const uint t) { return t == SNAPVK_KV_HQ3 ? HD / 16u : HD / 8u; }
uint kv_scale_words(const uint t) {
  if (t == SNAPVK_KV_Q8_0) return HD / 4u;
  if (t == SNAPVK_KV_Q5_0 || t == SNAPVK_KV_Q5_1) return HD / 8u + KV_B;
  if (t == SNAPVK_KV_HQ3) return HD / 16u + KV_B;
  return HD / 8u;
}
