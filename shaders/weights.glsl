// Weight access by storage type, chosen by one #define per variant (W_F32, W_F16):
// weights stay on the device in their stored form and are converted in registers.
// Binding 0 is always the weight matrix [rows, K], row-major (ggml's ne0 = K contiguous).
#if defined(W_F32)
layout(std430, binding = 0) readonly buffer Wt { float wdata[]; };
float w_load(uint i) { return wdata[i]; }
#elif defined(W_F16)
layout(std430, binding = 0) readonly buffer Wt { uint wdata[]; };  // f16 pairs; buffer padded to 4 bytes
float w_load(uint i) { return unpackHalf2x16(wdata[i >> 1])[i & 1u]; }
#else
#error "weights.glsl needs W_F32 or W_F16"
#endif
