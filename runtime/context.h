#pragma once
// Vulkan instance, physical-device choice, logical device with one compute queue, and the
// optional features later kernels use. Knows nothing of language models.
#include <vulkan/vulkan.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/memory.h"

namespace snapvk {

struct MemoryHeapInfo {
  uint64_t size = 0;
  bool device_local = false;
};

struct DeviceInfo {
  uint32_t index = 0;  // position in vkEnumeratePhysicalDevices order
  std::string name;
  VkPhysicalDeviceType type = VK_PHYSICAL_DEVICE_TYPE_OTHER;
  std::string driver;  // driver name and info string
  uint32_t api_version = 0;
  uint32_t subgroup_size = 0;  // default subgroup size in compute
  uint32_t min_subgroup_size = 0, max_subgroup_size = 0;
  bool subgroup_arithmetic = false;  // subgroupAdd/Max in compute shaders
  bool subgroup_size_control = false;
  bool fp16 = false;            // shaderFloat16
  bool int8 = false;            // shaderInt8
  bool storage16 = false;       // storageBuffer16BitAccess
  bool storage8 = false;        // storageBuffer8BitAccess
  bool int64 = false;           // shaderInt64 (matvec's 64-bit-load variants)
  bool timestamps = false;      // compute queue can write timestamps
  bool unified_memory = false;  // integrated GPU or CPU: device-local memory is host-visible
  float timestamp_period_ns = 1.0f;
  uint64_t max_storage_buffer_range = 0;
  uint64_t min_storage_buffer_offset_alignment = 0;
  uint32_t max_shared_memory = 0;
  uint32_t max_workgroup_invocations = 0;
  uint32_t max_workgroup_count[3] = {};
  uint32_t max_push_constants = 0;
  std::vector<MemoryHeapInfo> heaps;

  std::string type_name() const;
  std::string api_string() const;
  uint64_t device_local_bytes() const;  // size of the largest device-local heap
};

// SNAPVK_DEVICE_LIMITS=minimum: the device as the least capable one Vulkan allows (tests and CI,
// docs/reliability.md): every optional feature hidden (fp16, int8, int64, 16/8-bit storage,
// subgroup size control) and every limit at the specification's minimum (128 MiB bindings,
// 16 KiB shared memory, 128 invocations per workgroup, 65535 workgroups, 256-byte offsets), so
// that the paths taken without them run here.
void apply_minimum_limits(DeviceInfo& info);

struct ContextOptions {
  // Index ("1") or case-insensitive name substring ("llvmpipe"). Empty: $SNAPVK_DEVICE, then
  // the best device (discrete > integrated > virtual > CPU).
  std::string device;
  // Enable the Khronos validation layer. Also on when $SNAPVK_VALIDATION=1.
  bool validation = false;
  // Device bytes this context may allocate (0: no limit but the device's).
  uint64_t memory_budget = 0;
  // Seconds a fence wait may take before it is an error (0: $SNAPVK_FENCE_TIMEOUT_S, then 600).
  double fence_timeout_s = 0;
};

class Context {
 public:
  explicit Context(const ContextOptions& opts = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Every Vulkan device on this machine (creates a short-lived instance).
  static std::vector<DeviceInfo> list_devices();

  const DeviceInfo& info() const { return info_; }
  VkDevice device() const { return device_; }
  VkPhysicalDevice physical() const { return phys_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  VkPipelineCache pipeline_cache() const { return pipeline_cache_; }
  bool validation_enabled() const { return validation_; }
  MemoryTracker& memory() { return memory_; }
  const MemoryTracker& memory() const { return memory_; }

  // Memory type index for the requested properties, or -1.
  int find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags want) const;

  // Validation-layer errors seen since creation. Tests fail on any.
  uint64_t validation_errors() const { return validation_errors_.load(); }
  std::string last_validation_message() const;

  // Host-visible staging buffer of at least `bytes` (grown on demand, kept for reuse).
  // Hold staging_lock() while using it: sessions on other threads share it.
  class Buffer& staging(uint64_t bytes);
  std::unique_lock<std::mutex> staging_lock() { return std::unique_lock<std::mutex>(staging_mutex_); }
  // One-shot command buffer for transfers; submits and waits.
  void run_once(const std::function<void(VkCommandBuffer)>& record);
  // Wait on a fence with the configured timeout ($SNAPVK_FENCE_TIMEOUT_S, default 600 s);
  // a timeout or a lost device throws instead of hanging.
  void wait_fence(VkFence fence) const;
  // Submit one command buffer; safe from several threads (sessions share the queue).
  // Throws once the context is hung() or lost().
  void submit(VkCommandBuffer cb, VkFence fence);
  // Throws if the context is hung() or lost(): called before a command buffer or fence that
  // may still be pending is reused.
  void check_usable() const;

  // A fence wait timed out: the device may still run (or be stuck in) that work, so the
  // context is unusable. Its objects are then left to the driver instead of being destroyed
  // under work that may still use them: a leak, never a crash or a wait without end.
  bool hung() const { return hung_.load(); }
  // The driver reported VK_ERROR_DEVICE_LOST: unusable too, but objects are destroyed (the
  // spec allows it after a loss).
  bool lost() const { return lost_.load(); }

 private:
  static VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                            VkDebugUtilsMessageTypeFlagsEXT types,
                                            const VkDebugUtilsMessengerCallbackDataEXT* data, void* user);
  void destroy();

  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice phys_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  VkCommandPool transfer_pool_ = VK_NULL_HANDLE;
  VkFence transfer_fence_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties mem_props_{};
  DeviceInfo info_;
  bool validation_ = false;
  uint64_t fence_timeout_ns_ = 600ull * 1000000000ull;
  const char* fence_timeout_from_ = "the default; set SNAPVK_FENCE_TIMEOUT_S to wait longer";
  MemoryTracker memory_;
  std::unique_ptr<class Buffer> staging_;
  std::mutex transfer_mutex_, queue_mutex_, staging_mutex_;
  std::atomic<uint64_t> validation_errors_{0};
  mutable std::atomic<bool> hung_{false}, lost_{false};
  mutable std::mutex msg_mutex_;
  std::string last_validation_message_;
};

}  // namespace snapvk
