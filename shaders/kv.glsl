// KV-cache element access by storage type (KV_F32 or KV_F16), for kernels that read K at
// binding KV_K_BINDING and V at KV_V_BINDING. Layout: [kv_head][slot][head_dim].
// f16 entries are packed in pairs into 32-bit words (head_dim is even).
#if defined(KV_F32)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { float kdata[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { float vdata[]; };
vec2 k_load2(uint i) { return vec2(kdata[i], kdata[i + 1u]); }  // i even
vec2 v_load2(uint i) { return vec2(vdata[i], vdata[i + 1u]); }
float v_load(uint i) { return vdata[i]; }
#elif defined(KV_F16)
layout(std430, binding = KV_K_BINDING) readonly buffer KCache { uint kdata[]; };
layout(std430, binding = KV_V_BINDING) readonly buffer VCache { uint vdata[]; };
vec2 k_load2(uint i) { return unpackHalf2x16(kdata[i >> 1]); }
vec2 v_load2(uint i) { return unpackHalf2x16(vdata[i >> 1]); }
float v_load(uint i) { return unpackHalf2x16(vdata[i >> 1])[i & 1u]; }
#else
#error "kv.glsl needs KV_F32 or KV_F16"
#endif
