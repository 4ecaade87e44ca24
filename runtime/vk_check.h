#pragma once
// VK_CHECK reports file, line and the failing expression in every build type.
#include <vulkan/vulkan.h>

#include "runtime/error.h"

namespace snapvk {

const char* vk_result_name(VkResult r);
[[noreturn]] void vk_fail(VkResult r, const char* expr, const char* file, int line);

}  // namespace snapvk

#define VK_CHECK(expr)                                                                                  \
  do {                                                                                                  \
    VkResult vk_check_result_ = (expr);                                                                 \
    if (vk_check_result_ != VK_SUCCESS) ::snapvk::vk_fail(vk_check_result_, #expr, __FILE__, __LINE__); \
  } while (0)

// Shape invariants: cheap, kept in release builds, and they throw (ErrorKind::Internal)
// instead of aborting so that an embedding app survives a caller's mistake.
#define SNAPVK_ASSERT(cond, msg)                                                                               \
  do {                                                                                                         \
    if (!(cond))                                                                                               \
      throw ::snapvk::Error(::snapvk::ErrorKind::Internal,                                                     \
                            std::string(msg) + " (" #cond ", " __FILE__ ":" + std::to_string(__LINE__) + ")"); \
  } while (0)
