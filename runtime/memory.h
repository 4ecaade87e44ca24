#pragma once
// Device buffers and the accounting of every device allocation (current and peak bytes),
// so that the runtime can report exactly what it holds.
#include <vulkan/vulkan.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace snapvk {

class Context;

// "1.50 GiB", "12.0 MiB", "900 B": sizes in messages.
std::string format_bytes(uint64_t bytes);

class MemoryTracker {
 public:
  void on_alloc(uint64_t bytes);
  void on_free(uint64_t bytes);
  uint64_t current() const { return current_.load(); }
  uint64_t peak() const { return peak_.load(); }
  uint64_t allocations() const { return count_.load(); }
  void reset_peak() { peak_.store(current_.load()); }
  // An upper bound on device bytes (0: none). Allocations beyond it fail with snapvk::Error
  // (OutOfMemory), so that a process keeps within a share of a GPU and the limit is testable
  // on any device.
  void set_budget(uint64_t bytes) { budget_.store(bytes); }
  uint64_t budget() const { return budget_.load(); }
  // Reserves bytes against the budget; throws naming `what` when they do not fit.
  void reserve(uint64_t bytes, const std::string& what);

  // Holds back `bytes` of the budget for the allocations this thread makes while the Hold
  // lives: they draw from it (what is left returns when it ends), and other threads' cannot
  // take it. Checking and holding are one step, so two sessions created at once cannot both
  // pass a check that only one of them fits. When the bytes do not fit, throws
  // snapvk::Error(OutOfMemory, refused(in_use, budget)), in_use counting other holds. No budget: no-op.
  // A Hold lives in the scope (and thread) that made it; holds nest, innermost ending first.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept;
    Hold& operator=(Hold&&) = delete;
    ~Hold();

   private:
    friend class MemoryTracker;
    MemoryTracker* tracker_ = nullptr;
    uint64_t left_ = 0;
    Hold* outer_ = nullptr;  // an enclosing hold of this thread
  };
  [[nodiscard]] Hold hold(uint64_t bytes, const std::function<std::string(uint64_t in_use, uint64_t budget)>& refused);

 private:
  std::atomic<uint64_t> current_{0}, peak_{0}, count_{0}, budget_{0};
  uint64_t held_ = 0;        // bytes of all live holds not yet drawn (budget_mutex_)
  std::mutex budget_mutex_;  // budget checks, holds and draws are one step each
};

enum class BufferKind {
  Device,   // device-local; also host-mapped when the device has unified memory
  Staging,  // host-visible, coherent: uploads and downloads on discrete GPUs
};

// One VkBuffer with its own memory. Movable, not copyable; frees and un-tracks itself.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Context& ctx, uint64_t bytes, BufferKind kind = BufferKind::Device, std::string name = {});
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  VkBuffer handle() const { return buffer_; }
  uint64_t size() const { return size_; }
  void* mapped() const { return mapped_; }  // non-null when host-visible
  const std::string& name() const { return name_; }
  explicit operator bool() const { return buffer_ != VK_NULL_HANDLE; }

  // Copy host data in/out (direct when mapped, through the context's staging buffer otherwise).
  void upload(const void* src, uint64_t bytes, uint64_t offset = 0);
  void download(void* dst, uint64_t bytes, uint64_t offset = 0) const;
  void fill_zero();

 private:
  void release();
  Context* ctx_ = nullptr;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  uint64_t size_ = 0;
  uint64_t alloc_size_ = 0;
  void* mapped_ = nullptr;
  bool coherent_ = true;
  std::string name_;
};

}  // namespace snapvk
