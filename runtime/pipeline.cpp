#include "runtime/pipeline.h"

#include <array>
#include <unordered_map>
#include <utility>

#include "runtime/context.h"
#include "runtime/vk_check.h"

namespace snapvk {

std::array<uint32_t, 3> spirv_workgroup_size(std::span<const uint32_t> w, std::span<const uint32_t> spec) {
  // SPIR-V opcodes, decorations and execution modes read here (the SPIR-V specification, 3.x).
  enum : uint32_t {
    kOpExecutionMode = 16, kOpConstant = 43, kOpSpecConstant = 50, kOpSpecConstantComposite = 51,
    kOpDecorate = 71, kOpExecutionModeId = 331, kDecorationSpecId = 1, kDecorationBuiltIn = 11,
    kBuiltInWorkgroupSize = 25, kModeLocalSize = 17, kModeLocalSizeId = 38
  };
  std::array<uint32_t, 3> size = {1, 1, 1};
  std::unordered_map<uint32_t, uint32_t> spec_id, value;  // id -> SpecId, id -> its value
  std::array<uint32_t, 3> size_ids = {};                 // LocalSizeId or the WorkgroupSize composite
  uint32_t builtin_id = 0;
  bool by_id = false;
  for (size_t i = 5; i < w.size();) {
    const uint32_t n = w[i] >> 16, op = w[i] & 0xffff;
    if (n == 0 || i + n > w.size()) break;  // malformed: the driver will say so
    const uint32_t* a = &w[i + 1];
    if (op == kOpDecorate && n >= 4 && a[1] == kDecorationSpecId) spec_id[a[0]] = a[2];
    if (op == kOpDecorate && n >= 4 && a[1] == kDecorationBuiltIn && a[2] == kBuiltInWorkgroupSize) builtin_id = a[0];
    if (op == kOpExecutionMode && n >= 6 && a[1] == kModeLocalSize) size = {a[2], a[3], a[4]};
    if (op == kOpExecutionModeId && n >= 6 && a[1] == kModeLocalSizeId) size_ids = {a[2], a[3], a[4]}, by_id = true;
    if ((op == kOpConstant || op == kOpSpecConstant) && n >= 4) {
      uint32_t v = a[2];
      if (auto s = spec_id.find(a[1]); op == kOpSpecConstant && s != spec_id.end() && s->second < spec.size())
        v = spec[s->second];
      value[a[1]] = v;
    }
    if (op == kOpSpecConstantComposite && n >= 6 && a[1] == builtin_id) size_ids = {a[2], a[3], a[4]}, by_id = true;
    i += n;
  }
  if (by_id)
    for (int d = 0; d < 3; ++d)
      if (auto v = value.find(size_ids[d]); v != value.end()) size[d] = v->second;
  return size;
}

Pipeline::Pipeline(Context& ctx, const PipelineDesc& d)
    : ctx_(&ctx),
      device_(ctx.device()),
      name_(d.name),
      bindings_(d.bindings),
      push_size_(d.push_size),
      category_(d.category) {
  ctx.check_usable();
  SNAPVK_ASSERT(!d.spirv.empty(), "pipeline '" + d.name + "' has no SPIR-V");
  SNAPVK_ASSERT(d.push_size <= 128 && d.push_size % 4 == 0,
                "pipeline '" + d.name + "' push constants must be <= 128 bytes");
  // A workgroup larger than the device takes is undefined behaviour in Vulkan: refuse it here,
  // by the device's limit as Context reports it (SNAPVK_DEVICE_LIMITS=minimum lowers it).
  const auto wg = spirv_workgroup_size(d.spirv, d.spec);
  const uint64_t invocations = uint64_t(wg[0]) * wg[1] * wg[2];
  if (invocations > ctx.info().max_workgroup_invocations)
    throw Error(ErrorKind::Device, "kernel '" + d.name + "' needs workgroups of " + std::to_string(invocations) +
                                       " invocations; the device takes at most " +
                                       std::to_string(ctx.info().max_workgroup_invocations));
  try {
    std::vector<VkDescriptorSetLayoutBinding> binds(d.bindings);
    for (uint32_t i = 0; i < d.bindings; ++i)
      binds[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dl.bindingCount = d.bindings;
    dl.pBindings = binds.data();
    VK_CHECK(vkCreateDescriptorSetLayout(device_, &dl, nullptr, &set_layout_));

    VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, d.push_size};
    VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pl.setLayoutCount = 1;
    pl.pSetLayouts = &set_layout_;
    pl.pushConstantRangeCount = d.push_size ? 1 : 0;
    pl.pPushConstantRanges = d.push_size ? &pcr : nullptr;
    VK_CHECK(vkCreatePipelineLayout(device_, &pl, nullptr, &layout_));

    VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    mi.codeSize = d.spirv.size() * sizeof(uint32_t);
    mi.pCode = d.spirv.data();
    VkShaderModule module;
    VK_CHECK(vkCreateShaderModule(device_, &mi, nullptr, &module));

    std::vector<VkSpecializationMapEntry> entries(d.spec.size());
    for (uint32_t i = 0; i < d.spec.size(); ++i) entries[i] = {i, i * 4u, 4};
    VkSpecializationInfo si{uint32_t(entries.size()), entries.data(), d.spec.size() * 4, d.spec.data()};

    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rss{
        VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO};
    VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = d.spec.empty() ? nullptr : &si;
    if (d.subgroup_size && ctx.info().subgroup_size_control) {
      rss.requiredSubgroupSize = d.subgroup_size;
      ci.stage.pNext = &rss;
      ci.stage.flags = VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
    }
    ci.layout = layout_;
    VkResult r = vkCreateComputePipelines(device_, ctx.pipeline_cache(), 1, &ci, nullptr, &pipeline_);
    vkDestroyShaderModule(device_, module, nullptr);
    VK_CHECK(r);
  } catch (...) {
    release();
    throw;
  }
}

Pipeline::~Pipeline() { release(); }

void Pipeline::release() {
  if (!device_) return;
  if (ctx_->hung()) {  // work still running may use it: left to the driver
    pipeline_ = VK_NULL_HANDLE;
    layout_ = VK_NULL_HANDLE;
    set_layout_ = VK_NULL_HANDLE;
  }
  if (pipeline_) vkDestroyPipeline(device_, pipeline_, nullptr);
  if (layout_) vkDestroyPipelineLayout(device_, layout_, nullptr);
  if (set_layout_) vkDestroyDescriptorSetLayout(device_, set_layout_, nullptr);
  pipeline_ = VK_NULL_HANDLE;
  layout_ = VK_NULL_HANDLE;
  set_layout_ = VK_NULL_HANDLE;
  device_ = VK_NULL_HANDLE;
}

Pipeline::Pipeline(Pipeline&& o) noexcept { *this = std::move(o); }

Pipeline& Pipeline::operator=(Pipeline&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = std::exchange(o.ctx_, nullptr);
    device_ = std::exchange(o.device_, VK_NULL_HANDLE);
    pipeline_ = std::exchange(o.pipeline_, VK_NULL_HANDLE);
    layout_ = std::exchange(o.layout_, VK_NULL_HANDLE);
    set_layout_ = std::exchange(o.set_layout_, VK_NULL_HANDLE);
    name_ = std::move(o.name_);
    bindings_ = o.bindings_;
    push_size_ = o.push_size_;
    category_ = o.category_;
  }
  return *this;
}

}  // namespace snapvk
