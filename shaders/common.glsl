// Shared GLSL: extensions and helpers every kernel may use.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "snapvk_limits.h"

// Workgroups are laid out on a 2-D grid when one dimension would exceed the 65535 limit.
uint flat_workgroup() { return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; }

// f16 weights are read as packed pairs so that no 16-bit storage feature is required.
float half_at(uint packed, uint lane) { return unpackHalf2x16(packed)[lane]; }
