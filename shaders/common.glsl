// Shared GLSL: extensions and helpers every kernel may use.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "limits.h"

// f16 weights are read as packed pairs so that no 16-bit storage feature is required.
float load_f16(uint packed, uint lane) { return unpackHalf2x16(packed)[lane]; }
