#include "runtime/pipeline.h"

#include <utility>

#include "runtime/context.h"
#include "runtime/vk_check.h"

namespace snapvk {

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
