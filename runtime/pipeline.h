#pragma once
// A compute pipeline built once from embedded SPIR-V: N storage-buffer bindings (set 0,
// bindings 0..N-1), one push-constant block, and specialization constants for workgroup
// and tile sizes.
#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace snapvk {

class Context;

struct PipelineDesc {
  std::string name;                 // kernel name, used in errors and per-kernel timings
  std::span<const uint32_t> spirv;  // embedded SPIR-V words
  uint32_t bindings = 0;            // storage buffers at set 0, bindings 0..bindings-1
  uint32_t push_size = 0;           // bytes of the push-constant struct (<= 128)
  std::vector<uint32_t> spec;       // specialization constant i = spec[i] (floats bit-cast)
  uint32_t subgroup_size = 0;       // require this subgroup size (0: device default)
  uint32_t category = 0;            // the caller's grouping of kernels in timings (KernelTiming::category)
};

// The workgroup size (x, y, z) that SPIR-V declares, with `spec` applied to the specialization
// constants it names (local_size_x_id = i takes spec[i]).
std::array<uint32_t, 3> spirv_workgroup_size(std::span<const uint32_t> spirv, std::span<const uint32_t> spec);

class Pipeline {
 public:
  Pipeline() = default;
  Pipeline(Context& ctx, const PipelineDesc& desc);
  ~Pipeline();
  Pipeline(Pipeline&& o) noexcept;
  Pipeline& operator=(Pipeline&& o) noexcept;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  VkPipeline handle() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  VkDescriptorSetLayout set_layout() const { return set_layout_; }
  const std::string& name() const { return name_; }
  uint32_t bindings() const { return bindings_; }
  uint32_t push_size() const { return push_size_; }
  uint32_t category() const { return category_; }
  explicit operator bool() const { return pipeline_ != VK_NULL_HANDLE; }

 private:
  void release();
  const Context* ctx_ = nullptr;
  VkDevice device_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  std::string name_;
  uint32_t bindings_ = 0, push_size_ = 0, category_ = 0;
};

}  // namespace snapvk
