#include "runtime/memory.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "runtime/context.h"
#include "runtime/vk_check.h"

namespace snapvk {

std::string format_bytes(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / double(1ull << 20));
  else if (b >= (1ull << 10))
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / double(1ull << 10));
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

void MemoryTracker::on_alloc(uint64_t bytes) {
  uint64_t now = current_.fetch_add(bytes) + bytes;
  count_.fetch_add(1);
  uint64_t prev = peak_.load();
  while (now > prev && !peak_.compare_exchange_weak(prev, now)) {}
}

namespace {
thread_local MemoryTracker::Hold* t_hold = nullptr;  // this thread's innermost live hold
}  // namespace

void MemoryTracker::reserve(uint64_t bytes, const std::string& what) {
  const uint64_t limit = budget_.load();
  if (!limit) {
    on_alloc(bytes);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(budget_mutex_);
    // First from this thread's hold on this tracker, if any: those bytes were checked already.
    uint64_t from_hold = 0;
    Hold* h = t_hold;
    while (h && h->tracker_ != this) h = h->outer_;
    if (h) {
      from_hold = std::min(bytes, h->left_);
      h->left_ -= from_hold;
      held_ -= from_hold;
    }
    const uint64_t rest = bytes - from_hold;
    const uint64_t now = current_.load() + held_;
    if (rest > limit || now > limit - rest) {  // not now + rest > limit: that sum can wrap
      if (h) h->left_ += from_hold, held_ += from_hold;
      throw Error(ErrorKind::OutOfMemory, "device memory budget exceeded: " + what + " needs " + format_bytes(bytes) +
                                              ", " + format_bytes(now) + " in use of a budget of " +
                                              format_bytes(limit));
    }
    current_.fetch_add(bytes);
  }
  count_.fetch_add(1);
  const uint64_t now = current_.load();
  uint64_t prev = peak_.load();
  while (now > prev && !peak_.compare_exchange_weak(prev, now)) {}
}

MemoryTracker::Hold MemoryTracker::hold(uint64_t bytes,
                                        const std::function<std::string(uint64_t in_use, uint64_t budget)>& refused) {
  Hold h;
  const uint64_t limit = budget_.load();
  if (!limit) return h;
  std::lock_guard<std::mutex> lock(budget_mutex_);
  const uint64_t now = current_.load() + held_;
  if (bytes > limit || now > limit - bytes) throw Error(ErrorKind::OutOfMemory, refused(now, limit));
  held_ += bytes;
  h.tracker_ = this;
  h.left_ = bytes;
  h.outer_ = t_hold;
  t_hold = &h;  // a move (if the return is not elided) re-registers the new object
  return h;
}

MemoryTracker::Hold::Hold(Hold&& o) noexcept
    : tracker_(std::exchange(o.tracker_, nullptr)), left_(std::exchange(o.left_, 0)) {
  // Only a hold that owns bytes is registered; the moved-from one unregisters itself first.
  if (t_hold == &o) t_hold = o.outer_;
  if (tracker_) {
    outer_ = t_hold;
    t_hold = this;
  }
}

MemoryTracker::Hold::~Hold() {
  if (!tracker_) return;
  if (t_hold == this) t_hold = outer_;
  std::lock_guard<std::mutex> lock(tracker_->budget_mutex_);
  tracker_->held_ -= left_;
}

void MemoryTracker::on_free(uint64_t bytes) {
  current_.fetch_sub(bytes);
  count_.fetch_sub(1);
}

Buffer::Buffer(Context& ctx, uint64_t bytes, BufferKind kind, std::string name) : ctx_(&ctx), name_(std::move(name)) {
  ctx.check_usable();  // nothing new on a hung or lost device: it would only be leaked
  // Zero-sized tensors still get a valid (tiny) buffer so that every binding is legal.
  size_ = bytes;
  // Refused before Vulkan sees it: no heap holds it, and a size computed from a hostile number
  // must not reach vkCreateBuffer (sizes past maxBufferSize are invalid usage there).
  uint64_t largest_heap = 0;
  for (const MemoryHeapInfo& h : ctx.info().heaps) largest_heap = std::max(largest_heap, h.size);
  if (largest_heap && bytes > largest_heap)
    throw Error(ErrorKind::OutOfMemory, "out of device memory: buffer '" + name_ + "' of " + std::to_string(bytes) +
                                            " bytes is larger than the device's largest memory heap (" +
                                            std::to_string(largest_heap) + " bytes)");
  const uint64_t create_size = bytes ? bytes : 4;
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = create_size;
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VK_CHECK(vkCreateBuffer(ctx.device(), &bi, nullptr, &buffer_));

  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(ctx.device(), buffer_, &req);
  int type = -1;
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  if (kind == BufferKind::Staging) {
    type = ctx.find_memory_type(req.memoryTypeBits, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (type < 0) type = ctx.find_memory_type(req.memoryTypeBits, host);
  } else {
    // Unified memory: device-local and host-visible is the same RAM, so map it and skip staging.
    if (ctx.info().unified_memory)
      type = ctx.find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host);
    if (type < 0) type = ctx.find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0) type = ctx.find_memory_type(req.memoryTypeBits, 0);
  }
  if (type < 0) {
    vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    buffer_ = VK_NULL_HANDLE;
    throw Error(ErrorKind::Device, "no suitable memory type for buffer '" + name_ + "'");
  }
  try {
    // The budget is on device memory: staging buffers live in host memory on discrete GPUs.
    if (kind == BufferKind::Staging)
      ctx.memory().on_alloc(req.size);
    else
      ctx.memory().reserve(req.size, "buffer '" + name_ + "'");
  } catch (...) {
    vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    buffer_ = VK_NULL_HANDLE;
    throw;
  }
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type);
  VkResult r = vkAllocateMemory(ctx.device(), &ai, nullptr, &memory_);
  if (r != VK_SUCCESS) {
    ctx.memory().on_free(req.size);
    vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    buffer_ = VK_NULL_HANDLE;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      throw Error(ErrorKind::OutOfMemory, "out of device memory allocating " + std::to_string(req.size) +
                                              " bytes for '" + name_ + "' (" + std::to_string(ctx.memory().current()) +
                                              " bytes already allocated, device-local heap " +
                                              std::to_string(ctx.info().device_local_bytes()) + " bytes)");
    VK_CHECK(r);
  }
  alloc_size_ = req.size;
  VK_CHECK(vkBindBufferMemory(ctx.device(), buffer_, memory_, 0));

  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(ctx.physical(), &mp);
  const VkMemoryPropertyFlags flags = mp.memoryTypes[type].propertyFlags;
  if (flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
    coherent_ = (flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    VK_CHECK(vkMapMemory(ctx.device(), memory_, 0, VK_WHOLE_SIZE, 0, &mapped_));
  }
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
  if (!ctx_) return;
  if (ctx_->hung()) {  // work still running may use the memory: left to the driver
    ctx_ = nullptr;
    buffer_ = VK_NULL_HANDLE;
    memory_ = VK_NULL_HANDLE;
    mapped_ = nullptr;
    size_ = alloc_size_ = 0;
    return;
  }
  if (mapped_) vkUnmapMemory(ctx_->device(), memory_);
  if (buffer_) vkDestroyBuffer(ctx_->device(), buffer_, nullptr);
  if (memory_) {
    vkFreeMemory(ctx_->device(), memory_, nullptr);
    ctx_->memory().on_free(alloc_size_);
  }
  ctx_ = nullptr;
  buffer_ = VK_NULL_HANDLE;
  memory_ = VK_NULL_HANDLE;
  mapped_ = nullptr;
  size_ = alloc_size_ = 0;
}

Buffer::Buffer(Buffer&& o) noexcept { *this = std::move(o); }

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = std::exchange(o.ctx_, nullptr);
    buffer_ = std::exchange(o.buffer_, VK_NULL_HANDLE);
    memory_ = std::exchange(o.memory_, VK_NULL_HANDLE);
    size_ = std::exchange(o.size_, 0);
    alloc_size_ = std::exchange(o.alloc_size_, 0);
    mapped_ = std::exchange(o.mapped_, nullptr);
    coherent_ = o.coherent_;
    name_ = std::move(o.name_);
  }
  return *this;
}

namespace {
// Uploads through the staging buffer go in bounded chunks so a 4 GB model never needs a 4 GB staging buffer.
constexpr uint64_t kStagingChunk = 64ull << 20;
}  // namespace

void Buffer::upload(const void* src, uint64_t bytes, uint64_t offset) {
  SNAPVK_ASSERT(offset + bytes <= size_ && offset + bytes >= offset, "upload past the end of buffer '" + name_ + "'");
  if (bytes == 0) return;
  if (mapped_) {
    std::memcpy(static_cast<char*>(mapped_) + offset, src, bytes);
    if (!coherent_) {
      VkMappedMemoryRange r{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE, nullptr, memory_, 0, VK_WHOLE_SIZE};
      VK_CHECK(vkFlushMappedMemoryRanges(ctx_->device(), 1, &r));
    }
    return;
  }
  auto lock = ctx_->staging_lock();
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(kStagingChunk, bytes - done);
    Buffer& st = ctx_->staging(std::min(kStagingChunk, bytes));
    std::memcpy(st.mapped(), static_cast<const char*>(src) + done, n);
    ctx_->run_once([&](VkCommandBuffer cb) {
      VkBufferCopy c{0, offset + done, n};
      vkCmdCopyBuffer(cb, st.handle(), buffer_, 1, &c);
    });
    done += n;
  }
}

void Buffer::download(void* dst, uint64_t bytes, uint64_t offset) const {
  SNAPVK_ASSERT(offset + bytes <= size_ && offset + bytes >= offset, "download past the end of buffer '" + name_ + "'");
  if (bytes == 0) return;
  if (mapped_) {
    if (!coherent_) {
      VkMappedMemoryRange r{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE, nullptr, memory_, 0, VK_WHOLE_SIZE};
      VK_CHECK(vkInvalidateMappedMemoryRanges(ctx_->device(), 1, &r));
    }
    std::memcpy(dst, static_cast<const char*>(mapped_) + offset, bytes);
    return;
  }
  auto lock = ctx_->staging_lock();
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(kStagingChunk, bytes - done);
    Buffer& st = ctx_->staging(std::min(kStagingChunk, bytes));
    ctx_->run_once([&](VkCommandBuffer cb) {
      VkBufferCopy c{offset + done, 0, n};
      vkCmdCopyBuffer(cb, buffer_, st.handle(), 1, &c);
    });
    std::memcpy(static_cast<char*>(dst) + done, st.mapped(), n);
    done += n;
  }
}

void Buffer::fill_zero() {
  if (mapped_) {
    std::memset(mapped_, 0, size_);
    return;
  }
  ctx_->run_once([&](VkCommandBuffer cb) { vkCmdFillBuffer(cb, buffer_, 0, VK_WHOLE_SIZE, 0); });
}

}  // namespace snapvk
