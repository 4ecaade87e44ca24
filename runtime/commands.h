#pragma once
// Recording and submitting compute work: one dispatch() helper that checks every binding
// and the push-constant size against the pipeline, a coarse barrier between dependent
// dispatches, submission with a fence, and per-kernel GPU timestamps.
#include <vulkan/vulkan.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace snapvk {

class Context;
class Buffer;
class Pipeline;

// A bound range of a buffer: [offset, offset + size). size 0 means "to the end".
struct BufferRange {
  const Buffer* buffer = nullptr;
  uint64_t offset = 0;
  uint64_t size = 0;
  BufferRange() = default;                      // none (a dispatch refuses it)
  BufferRange(const Buffer& b) : buffer(&b) {}  // NOLINT: whole buffers convert implicitly
  BufferRange(const Buffer& b, uint64_t off, uint64_t bytes) : buffer(&b), offset(off), size(bytes) {}
};

struct KernelTiming {
  std::string name;
  uint32_t category = 0;  // the pipeline's (PipelineDesc::category)
  uint64_t count = 0;
  double total_ms = 0;
};

class CommandStream {
 public:
  explicit CommandStream(Context& ctx, uint32_t max_timestamps = 16384);
  ~CommandStream();
  CommandStream(const CommandStream&) = delete;
  CommandStream& operator=(const CommandStream&) = delete;

  // Start recording. Descriptor sets of the previous recording are recycled.
  void begin();

  template <class PushConstants>
  void dispatch(const Pipeline& p, std::initializer_list<BufferRange> buffers, const PushConstants& pc, uint32_t gx,
                uint32_t gy = 1, uint32_t gz = 1) {
    static_assert(sizeof(PushConstants) <= 128, "push constants are limited to 128 bytes");
    dispatch_raw(p, buffers, &pc, uint32_t(sizeof(PushConstants)), gx, gy, gz);
  }
  void dispatch_raw(const Pipeline& p, std::initializer_list<BufferRange> buffers, const void* pc, uint32_t pc_size,
                    uint32_t gx, uint32_t gy, uint32_t gz);

  // Every earlier compute/transfer write is visible to every later compute/transfer access.
  void barrier();
  void copy(const Buffer& src, uint64_t src_offset, const Buffer& dst, uint64_t dst_offset, uint64_t bytes);
  void fill(const Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value);

  // End, submit, wait for the fence (with timeout); results are then readable on the host.
  void submit();
  bool recording() const { return recording_; }
  uint64_t dispatches() const { return dispatch_count_; }

  // Per-kernel GPU time, aggregated by pipeline name over every submit since the last reset.
  void set_profiling(bool on) { profiling_ = on; }
  std::vector<KernelTiming> timings() const;    // sorted by total time, largest first
  double category_ms(uint32_t category) const;  // total of the kernels of one category
  void reset_timings() { totals_.clear(); }

 private:
  VkDescriptorSet allocate_set(VkDescriptorSetLayout layout);
  void add_pool();

  Context& ctx_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cb_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  std::vector<VkDescriptorPool> desc_pools_;
  size_t desc_pool_index_ = 0;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  uint32_t max_timestamps_ = 0;
  std::vector<const Pipeline*> stamp_kernels_;  // stamp i (i >= 1) ends a dispatch of this pipeline
  bool profiling_ = false;
  bool recording_ = false;
  uint64_t dispatch_count_ = 0;
  std::map<std::string, KernelTiming> totals_;
};

}  // namespace snapvk
