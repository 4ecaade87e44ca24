// Limits shared by host C++ and GLSL: plain #defines only, so both languages include it.
#ifndef SNAPVK_LIMITS_H
#define SNAPVK_LIMITS_H

#define SNAPVK_MAX_HEAD_DIM 256      // attention kernels keep one query row of this size in registers/shared
#define SNAPVK_MAX_WG 1024           // largest workgroup any kernel asks for (Vulkan's minimum guarantee is 128)
#define SNAPVK_TOPK_UNROLL 8        // topk_select reads its share this many keys per (counted) loop iteration
#define SNAPVK_QK8_0 32              // ggml Q8_0 / Q4_0 block size
#define SNAPVK_QK_K 256              // ggml K-quant super-block size
#define SNAPVK_K_CENTER_ROWS 64      // the first keys of a layer whose mean centres a rotated K cache

#endif
