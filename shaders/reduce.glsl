// Workgroup-wide reductions: subgroup ops first, then one shared slot per subgroup.
// Call from uniform control flow. The host keeps workgroups a multiple of the subgroup size
// and at most SNAPVK_MAX_SUBGROUPS subgroups.
#define SNAPVK_MAX_SUBGROUPS 64
shared float reduce_slots[SNAPVK_MAX_SUBGROUPS];

float workgroup_sum(float v) {
  v = subgroupAdd(v);
  if (gl_NumSubgroups == 1) return v;
  if (subgroupElect()) reduce_slots[gl_SubgroupID] = v;
  barrier();
  float total = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; ++i) total += reduce_slots[i];
  barrier();
  return total;
}

float workgroup_max(float v) {
  v = subgroupMax(v);
  if (gl_NumSubgroups == 1) return v;
  if (subgroupElect()) reduce_slots[gl_SubgroupID] = v;
  barrier();
  float m = reduce_slots[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) m = max(m, reduce_slots[i]);
  barrier();
  return m;
}
