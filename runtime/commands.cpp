#include "runtime/commands.h"

#include <algorithm>

#include "runtime/context.h"
#include "runtime/memory.h"
#include "runtime/pipeline.h"
#include "runtime/vk_check.h"

namespace snapvk {

namespace {
constexpr uint32_t kSetsPerPool = 1024;
constexpr uint32_t kDescriptorsPerPool = 8 * kSetsPerPool;
}  // namespace

CommandStream::CommandStream(Context& ctx, uint32_t max_timestamps) : ctx_(ctx), max_timestamps_(max_timestamps) {
  ctx.check_usable();
  VkCommandPoolCreateInfo cpi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  cpi.queueFamilyIndex = ctx.queue_family();
  VK_CHECK(vkCreateCommandPool(ctx.device(), &cpi, nullptr, &pool_));
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VK_CHECK(vkAllocateCommandBuffers(ctx.device(), &ai, &cb_));
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VK_CHECK(vkCreateFence(ctx.device(), &fci, nullptr, &fence_));
  add_pool();
  if (ctx.info().timestamps && max_timestamps_ > 0) {
    VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = max_timestamps_;
    VK_CHECK(vkCreateQueryPool(ctx.device(), &qi, nullptr, &queries_));
  }
}

CommandStream::~CommandStream() {
  if (ctx_.hung()) return;  // its command buffer may still run: left to the driver
  VkDevice d = ctx_.device();
  if (recording_) vkEndCommandBuffer(cb_);
  if (queries_) vkDestroyQueryPool(d, queries_, nullptr);
  for (auto p : desc_pools_) vkDestroyDescriptorPool(d, p, nullptr);
  if (fence_) vkDestroyFence(d, fence_, nullptr);
  if (pool_) vkDestroyCommandPool(d, pool_, nullptr);
}

void CommandStream::add_pool() {
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kDescriptorsPerPool};
  VkDescriptorPoolCreateInfo pi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  pi.maxSets = kSetsPerPool;
  pi.poolSizeCount = 1;
  pi.pPoolSizes = &size;
  VkDescriptorPool pool;
  VK_CHECK(vkCreateDescriptorPool(ctx_.device(), &pi, nullptr, &pool));
  desc_pools_.push_back(pool);
}

VkDescriptorSet CommandStream::allocate_set(VkDescriptorSetLayout layout) {
  for (;;) {
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = desc_pools_[desc_pool_index_];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &layout;
    VkDescriptorSet set;
    VkResult r = vkAllocateDescriptorSets(ctx_.device(), &ai, &set);
    if (r == VK_SUCCESS) return set;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) VK_CHECK(r);
    // Pools are kept and reused: a long prefill grows the set once, later recordings reuse it.
    if (++desc_pool_index_ == desc_pools_.size()) add_pool();
  }
}

void CommandStream::begin() {
  SNAPVK_ASSERT(!recording_, "CommandStream::begin while already recording");
  ctx_.check_usable();  // after a timeout the command buffer may still be pending
  for (auto p : desc_pools_) VK_CHECK(vkResetDescriptorPool(ctx_.device(), p, 0));
  desc_pool_index_ = 0;
  VK_CHECK(vkResetCommandBuffer(cb_, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  VK_CHECK(vkBeginCommandBuffer(cb_, &bi));
  recording_ = true;
  barrier();  // earlier submissions' writes are visible to this one (its first scope covers them)
  stamp_kernels_.clear();
  if (profiling_ && queries_) {
    vkCmdResetQueryPool(cb_, queries_, 0, max_timestamps_);
    vkCmdWriteTimestamp(cb_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_, 0);
    stamp_kernels_.push_back(nullptr);
  }
}

void CommandStream::dispatch_raw(const Pipeline& p, std::initializer_list<BufferRange> buffers, const void* pc,
                                 uint32_t pc_size, uint32_t gx, uint32_t gy, uint32_t gz) {
  const DeviceInfo& info = ctx_.info();
  SNAPVK_ASSERT(recording_, "dispatch of '" + p.name() + "' outside begin()/submit()");
  SNAPVK_ASSERT(p, "dispatch of a pipeline that was never created");
  SNAPVK_ASSERT(buffers.size() == p.bindings(), "kernel '" + p.name() + "' takes " + std::to_string(p.bindings()) +
                                                    " buffers, got " + std::to_string(buffers.size()));
  SNAPVK_ASSERT(pc_size == p.push_size(), "kernel '" + p.name() + "' push constants are " +
                                              std::to_string(p.push_size()) + " bytes, got " + std::to_string(pc_size));
  SNAPVK_ASSERT(
      gx <= info.max_workgroup_count[0] && gy <= info.max_workgroup_count[1] && gz <= info.max_workgroup_count[2],
      "kernel '" + p.name() + "' grid " + std::to_string(gx) + "x" + std::to_string(gy) + "x" + std::to_string(gz) +
          " exceeds the device's workgroup count limits");
  if (gx == 0 || gy == 0 || gz == 0) return;

  VkDescriptorBufferInfo infos[16];
  VkWriteDescriptorSet writes[16];
  SNAPVK_ASSERT(buffers.size() <= 16, "too many bindings");
  VkDescriptorSet set = allocate_set(p.set_layout());
  uint32_t i = 0;
  for (const BufferRange& r : buffers) {
    const std::string where = "kernel '" + p.name() + "' binding " + std::to_string(i);
    SNAPVK_ASSERT(r.buffer && *r.buffer, where + ": no buffer");
    const uint64_t size = r.size ? r.size : r.buffer->size() - std::min(r.offset, r.buffer->size());
    SNAPVK_ASSERT(r.offset % info.min_storage_buffer_offset_alignment == 0,
                  where + ": offset " + std::to_string(r.offset) + " is not aligned to " +
                      std::to_string(info.min_storage_buffer_offset_alignment));
    SNAPVK_ASSERT(r.offset <= r.buffer->size() && size <= r.buffer->size() - r.offset && size > 0,
                  where + ": range [" + std::to_string(r.offset) + ", +" + std::to_string(size) +
                      ") is outside buffer '" + r.buffer->name() + "' of " + std::to_string(r.buffer->size()) +
                      " bytes");
    SNAPVK_ASSERT(size <= info.max_storage_buffer_range, where + ": range of " + std::to_string(size) +
                                                             " bytes exceeds maxStorageBufferRange " +
                                                             std::to_string(info.max_storage_buffer_range));
    infos[i] = {r.buffer->handle(), r.offset, size};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    ++i;
  }
  vkUpdateDescriptorSets(ctx_.device(), i, writes, 0, nullptr);
  vkCmdBindPipeline(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, p.handle());
  vkCmdBindDescriptorSets(cb_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, 1, &set, 0, nullptr);
  if (pc_size) vkCmdPushConstants(cb_, p.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, pc_size, pc);
  vkCmdDispatch(cb_, gx, gy, gz);
  ++dispatch_count_;
  if (profiling_ && queries_ && !stamp_kernels_.empty() && stamp_kernels_.size() < max_timestamps_) {
    vkCmdWriteTimestamp(cb_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_, uint32_t(stamp_kernels_.size()));
    stamp_kernels_.push_back(&p);
  }
}

void CommandStream::barrier() {
  SNAPVK_ASSERT(recording_, "barrier outside begin()/submit()");
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cb_, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void CommandStream::copy(const Buffer& src, uint64_t src_offset, const Buffer& dst, uint64_t dst_offset,
                         uint64_t bytes) {
  SNAPVK_ASSERT(recording_, "copy outside begin()/submit()");
  SNAPVK_ASSERT(src_offset <= src.size() && bytes <= src.size() - src_offset && dst_offset <= dst.size() &&
                    bytes <= dst.size() - dst_offset,
                "copy out of range");
  if (bytes == 0) return;
  VkBufferCopy c{src_offset, dst_offset, bytes};
  vkCmdCopyBuffer(cb_, src.handle(), dst.handle(), 1, &c);
}

void CommandStream::fill(const Buffer& dst, uint64_t offset, uint64_t bytes, uint32_t value) {
  SNAPVK_ASSERT(recording_, "fill outside begin()/submit()");
  SNAPVK_ASSERT(offset % 4 == 0 && bytes % 4 == 0 && offset <= dst.size() && bytes <= dst.size() - offset,
                "fill out of range or unaligned");
  if (bytes == 0) return;
  vkCmdFillBuffer(cb_, dst.handle(), offset, bytes, value);
}

void CommandStream::submit() {
  SNAPVK_ASSERT(recording_, "submit without begin()");
  // Make device writes visible to host reads after the fence.
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cb_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
  recording_ = false;
  VK_CHECK(vkEndCommandBuffer(cb_));
  VK_CHECK(vkResetFences(ctx_.device(), 1, &fence_));
  ctx_.submit(cb_, fence_);
  ctx_.wait_fence(fence_);

  if (stamp_kernels_.size() > 1) {
    std::vector<uint64_t> stamps(stamp_kernels_.size());
    VK_CHECK(vkGetQueryPoolResults(ctx_.device(), queries_, 0, uint32_t(stamps.size()), stamps.size() * 8,
                                   stamps.data(), 8, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    const double ns = ctx_.info().timestamp_period_ns;
    for (size_t i = 1; i < stamps.size(); ++i) {
      const Pipeline& p = *stamp_kernels_[i];
      KernelTiming& t = totals_[p.name()];
      t.name = p.name();
      t.category = p.category();
      t.count += 1;
      t.total_ms += double(stamps[i] - stamps[i - 1]) * ns * 1e-6;
    }
  }
  stamp_kernels_.clear();
}

std::vector<KernelTiming> CommandStream::timings() const {
  std::vector<KernelTiming> out;
  for (const auto& [_, t] : totals_) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  return out;
}

double CommandStream::category_ms(uint32_t category) const {
  double ms = 0;
  for (const auto& [_, t] : totals_)
    if (t.category == category) ms += t.total_ms;
  return ms;
}

}  // namespace snapvk
