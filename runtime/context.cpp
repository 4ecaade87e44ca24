#include "runtime/context.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/log.h"
#include "runtime/vk_check.h"

namespace snapvk {

const char* vk_result_name(VkResult r) {
  switch (r) {
#define CASE(x) \
  case x: return #x;
    CASE(VK_SUCCESS)
    CASE(VK_NOT_READY)
    CASE(VK_TIMEOUT) CASE(VK_INCOMPLETE) CASE(VK_ERROR_OUT_OF_HOST_MEMORY) CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        CASE(VK_ERROR_INITIALIZATION_FAILED) CASE(VK_ERROR_DEVICE_LOST) CASE(VK_ERROR_MEMORY_MAP_FAILED)
            CASE(VK_ERROR_LAYER_NOT_PRESENT) CASE(VK_ERROR_EXTENSION_NOT_PRESENT) CASE(VK_ERROR_FEATURE_NOT_PRESENT)
                CASE(VK_ERROR_INCOMPATIBLE_DRIVER) CASE(VK_ERROR_TOO_MANY_OBJECTS) CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
                    CASE(VK_ERROR_FRAGMENTED_POOL) CASE(VK_ERROR_OUT_OF_POOL_MEMORY) CASE(VK_ERROR_UNKNOWN)
#undef CASE
                        default : return "VkResult(?)";
  }
}

void vk_fail(VkResult r, const char* expr, const char* file, int line) {
  std::string what = std::string(vk_result_name(r)) + " from " + expr + " at " + file + ":" + std::to_string(line);
  if (r == VK_ERROR_DEVICE_LOST) what = "Vulkan device lost: " + what;
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY) what = "out of device memory: " + what;
  const bool memory =
      r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_POOL_MEMORY;
  throw Error(memory ? ErrorKind::OutOfMemory : ErrorKind::Device, what);
}

std::string DeviceInfo::type_name() const {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

std::string DeviceInfo::api_string() const {
  return std::to_string(VK_API_VERSION_MAJOR(api_version)) + "." + std::to_string(VK_API_VERSION_MINOR(api_version)) +
         "." + std::to_string(VK_API_VERSION_PATCH(api_version));
}

uint64_t DeviceInfo::device_local_bytes() const {
  uint64_t best = 0;
  for (const auto& h : heaps)
    if (h.device_local) best = std::max(best, h.size);
  return best;
}

namespace {

bool has_layer(const char* name) {
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, nullptr);
  std::vector<VkLayerProperties> layers(n);
  vkEnumerateInstanceLayerProperties(&n, layers.data());
  for (auto& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

bool has_instance_ext(const char* name) {
  uint32_t n = 0;
  vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateInstanceExtensionProperties(nullptr, &n, exts.data());
  for (auto& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

std::vector<std::string> device_extensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data());
  std::vector<std::string> out;
  for (auto& e : exts) out.emplace_back(e.extensionName);
  return out;
}

bool contains(const std::vector<std::string>& v, const char* s) { return std::find(v.begin(), v.end(), s) != v.end(); }

int compute_queue_family(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> fams(n);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, fams.data());
  // Prefer a compute-only family (async compute on discrete GPUs), else any with compute.
  int any = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (!(fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
    if (!(fams[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) && fams[i].timestampValidBits > 0) return int(i);
    if (any < 0) any = int(i);
  }
  return any;
}

// Features the kernels may use: queried with one pNext chain, enabled where present.
struct FeatureChain {
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceVulkan11Features v11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features v12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceSubgroupSizeControlFeatures ssc{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
  void link(bool with_ssc) {
    f2.pNext = &v11;
    v11.pNext = &v12;
    v12.pNext = with_ssc ? &ssc : nullptr;
    ssc.pNext = nullptr;
  }
};

DeviceInfo describe(VkPhysicalDevice pd, uint32_t index) {
  DeviceInfo info;
  info.index = index;
  VkPhysicalDeviceSubgroupProperties sg{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties sscp{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  VkPhysicalDeviceDriverProperties drv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  auto exts = device_extensions(pd);
  VkPhysicalDeviceProperties base;
  vkGetPhysicalDeviceProperties(pd, &base);
  const bool ssc_ok =
      base.apiVersion >= VK_API_VERSION_1_3 || contains(exts, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
  p2.pNext = &sg;
  sg.pNext = &drv;
  drv.pNext = ssc_ok ? &sscp : nullptr;
  vkGetPhysicalDeviceProperties2(pd, &p2);
  const auto& p = p2.properties;
  info.name = p.deviceName;
  info.type = p.deviceType;
  info.api_version = p.apiVersion;
  info.driver = std::string(drv.driverName) + (drv.driverInfo[0] ? std::string(" ") + drv.driverInfo : "");
  info.subgroup_size = sg.subgroupSize;
  info.min_subgroup_size = ssc_ok ? sscp.minSubgroupSize : sg.subgroupSize;
  info.max_subgroup_size = ssc_ok ? sscp.maxSubgroupSize : sg.subgroupSize;
  info.subgroup_arithmetic = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  info.timestamp_period_ns = p.limits.timestampPeriod;
  info.max_storage_buffer_range = p.limits.maxStorageBufferRange;
  info.min_storage_buffer_offset_alignment = p.limits.minStorageBufferOffsetAlignment;
  info.max_shared_memory = p.limits.maxComputeSharedMemorySize;
  info.max_workgroup_invocations = p.limits.maxComputeWorkGroupInvocations;
  for (int i = 0; i < 3; ++i) info.max_workgroup_count[i] = p.limits.maxComputeWorkGroupCount[i];
  info.max_push_constants = p.limits.maxPushConstantsSize;

  FeatureChain fc;
  fc.link(ssc_ok);
  vkGetPhysicalDeviceFeatures2(pd, &fc.f2);
  info.fp16 = fc.v12.shaderFloat16;
  info.int8 = fc.v12.shaderInt8;
  info.storage16 = fc.v11.storageBuffer16BitAccess;
  info.storage8 = fc.v12.storageBuffer8BitAccess;
  info.int64 = fc.f2.features.shaderInt64;
  info.subgroup_size_control = ssc_ok && fc.ssc.subgroupSizeControl && fc.ssc.computeFullSubgroups;

  int qf = compute_queue_family(pd);
  if (qf >= 0) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
    std::vector<VkQueueFamilyProperties> fams(n);
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, fams.data());
    info.timestamps = fams[qf].timestampValidBits > 0 && p.limits.timestampPeriod > 0;
  }
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(pd, &mp);
  for (uint32_t i = 0; i < mp.memoryHeapCount; ++i)
    info.heaps.push_back({mp.memoryHeaps[i].size, (mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0});
  info.unified_memory = info.type == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU || info.type == VK_PHYSICAL_DEVICE_TYPE_CPU;
  return info;
}

int type_rank(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

VkInstance make_instance(bool validation, bool sync_validation) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "snapvk";
  app.pEngineName = "snapvk";
  app.apiVersion = VK_API_VERSION_1_3;
  std::vector<const char*> layers, exts;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  if (has_instance_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {  // MoltenVK
    exts.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    ci.flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  VkValidationFeatureEnableEXT sync_feature = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT vf{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  if (validation) {
    if (!has_layer("VK_LAYER_KHRONOS_validation"))
      throw Error(ErrorKind::Device,
                  "validation requested but VK_LAYER_KHRONOS_validation is not installed (apt-get install "
                  "vulkan-validationlayers)");
    layers.push_back("VK_LAYER_KHRONOS_validation");
    if (!has_instance_ext(VK_EXT_DEBUG_UTILS_EXTENSION_NAME))
      throw Error(ErrorKind::Device, "validation requested but " VK_EXT_DEBUG_UTILS_EXTENSION_NAME " is missing");
    exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    if (sync_validation) {
      vf.enabledValidationFeatureCount = 1;
      vf.pEnabledValidationFeatures = &sync_feature;
      ci.pNext = &vf;
    }
  }
  ci.pApplicationInfo = &app;
  ci.enabledLayerCount = uint32_t(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  ci.enabledExtensionCount = uint32_t(exts.size());
  ci.ppEnabledExtensionNames = exts.data();
  VkInstance inst = VK_NULL_HANDLE;
  VkResult r = vkCreateInstance(&ci, nullptr, &inst);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED)
    throw Error(ErrorKind::Device,
                "no Vulkan driver found (" + std::string(vk_result_name(r)) +
                    "): install a GPU driver, or Mesa's lavapipe for the CPU (apt-get install mesa-vulkan-drivers)");
  VK_CHECK(r);
  return inst;
}

std::vector<VkPhysicalDevice> physical_devices(VkInstance inst) {
  uint32_t n = 0;
  VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, nullptr));
  std::vector<VkPhysicalDevice> pds(n);
  VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, pds.data()));
  return pds;
}

const char* kNoDevice =
    "no Vulkan device found: install a GPU driver, or Mesa's lavapipe for the CPU (apt-get install "
    "mesa-vulkan-drivers)";

}  // namespace

std::vector<DeviceInfo> Context::list_devices() {
  VkInstance inst = make_instance(false, false);
  std::vector<DeviceInfo> out;
  try {
    auto pds = physical_devices(inst);
    for (uint32_t i = 0; i < pds.size(); ++i) out.push_back(describe(pds[i], i));
  } catch (...) {
    vkDestroyInstance(inst, nullptr);
    throw;
  }
  vkDestroyInstance(inst, nullptr);
  return out;
}

void apply_minimum_limits(DeviceInfo& info) {
  info.fp16 = info.int8 = info.int64 = info.storage16 = info.storage8 = false;
  info.subgroup_size_control = false;
  info.max_storage_buffer_range = std::min<uint64_t>(info.max_storage_buffer_range, 1ull << 27);
  info.max_shared_memory = std::min<uint32_t>(info.max_shared_memory, 16384);
  info.max_workgroup_invocations = std::min<uint32_t>(info.max_workgroup_invocations, 128);
  for (uint32_t& n : info.max_workgroup_count) n = std::min<uint32_t>(n, 65535);
  info.max_push_constants = std::min<uint32_t>(info.max_push_constants, 128);
  info.min_storage_buffer_offset_alignment = std::max<uint64_t>(info.min_storage_buffer_offset_alignment, 256);
}

Context::Context(const ContextOptions& opts) {
  const char* env_val = std::getenv("SNAPVK_VALIDATION");
  const std::string val_env = env_val ? env_val : "";
  validation_ = opts.validation || (!val_env.empty() && val_env != "0");
  const bool sync = val_env == "sync";
  if (const char* t = std::getenv("SNAPVK_FENCE_TIMEOUT_S"); t && *t) {
    char* end = nullptr;
    double s = std::strtod(t, &end);
    if (end && *end == 0 && s > 0 && s < 1e9) {
      fence_timeout_ns_ = uint64_t(s * 1e9);
      fence_timeout_from_ = "SNAPVK_FENCE_TIMEOUT_S";
    }
  }
  if (opts.fence_timeout_s > 0 && opts.fence_timeout_s < 1e9) {
    fence_timeout_ns_ = uint64_t(opts.fence_timeout_s * 1e9);
    fence_timeout_from_ = "ContextOptions::fence_timeout_s";
  }

  memory_.set_budget(opts.memory_budget);
  instance_ = make_instance(validation_, sync);
  try {
    if (validation_) {
      VkDebugUtilsMessengerCreateInfoEXT mi{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
      mi.messageSeverity =
          VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
      mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
      mi.pfnUserCallback = &Context::debug_callback;
      mi.pUserData = this;
      auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkCreateDebugUtilsMessengerEXT"));
      if (!create)
        throw Error(ErrorKind::Device, "validation requested but vkCreateDebugUtilsMessengerEXT is unavailable");
      VK_CHECK(create(instance_, &mi, nullptr, &messenger_));
    }

    auto pds = physical_devices(instance_);
    if (pds.empty()) throw Error(ErrorKind::Device, kNoDevice);
    std::vector<DeviceInfo> infos;
    for (uint32_t i = 0; i < pds.size(); ++i) infos.push_back(describe(pds[i], i));

    std::string want = opts.device;
    if (want.empty())
      if (const char* e = std::getenv("SNAPVK_DEVICE")) want = e;
    int chosen = -1;
    if (!want.empty()) {
      const bool numeric =
          std::all_of(want.begin(), want.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      if (numeric) {
        unsigned long idx = std::stoul(want);
        if (idx >= pds.size())
          throw Error(ErrorKind::Device, "device index " + want + " out of range: " + std::to_string(pds.size()) +
                                             " device(s) (see `snapvk devices`)");
        chosen = int(idx);
      } else {
        for (auto& di : infos)
          if (lower(di.name).find(lower(want)) != std::string::npos) {
            chosen = int(di.index);
            break;
          }
        if (chosen < 0)
          throw Error(ErrorKind::Device, "no Vulkan device matches '" + want + "' (see `snapvk devices`)");
      }
    } else {
      for (auto& di : infos) {
        if (compute_queue_family(pds[di.index]) < 0 || di.api_version < VK_API_VERSION_1_2) continue;
        if (chosen < 0 || type_rank(di.type) < type_rank(infos[chosen].type)) chosen = int(di.index);
      }
      if (chosen < 0) throw Error(ErrorKind::Device, kNoDevice);
    }
    phys_ = pds[chosen];
    info_ = infos[chosen];
    if (const char* l = std::getenv("SNAPVK_DEVICE_LIMITS"); l && *l) {
      if (std::string(l) != "minimum")
        throw Error(ErrorKind::InvalidArgument,
                    std::string("SNAPVK_DEVICE_LIMITS='") + l + "': the one setting is 'minimum'");
      apply_minimum_limits(info_);
    }
    if (info_.api_version < VK_API_VERSION_1_2)
      throw Error(ErrorKind::Device,
                  "device '" + info_.name + "' supports Vulkan " + info_.api_string() + "; snapvk needs 1.2 or newer");
    if (!info_.subgroup_arithmetic)
      throw Error(
          ErrorKind::Device,
          "device '" + info_.name + "' lacks subgroup arithmetic in compute shaders, which snapvk's reductions need");
    int qf = compute_queue_family(phys_);
    if (qf < 0) throw Error(ErrorKind::Device, "device '" + info_.name + "' has no compute queue");
    queue_family_ = uint32_t(qf);

    // Enable exactly the optional features that are present; kernels pick variants by info_.
    auto exts = device_extensions(phys_);
    const bool ssc_ok =
        info_.api_version >= VK_API_VERSION_1_3 || contains(exts, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    FeatureChain want_f;
    want_f.link(ssc_ok && info_.subgroup_size_control);
    want_f.v11.storageBuffer16BitAccess = info_.storage16;
    want_f.v12.shaderFloat16 = info_.fp16;
    want_f.v12.shaderInt8 = info_.int8;
    want_f.v12.storageBuffer8BitAccess = info_.storage8;
    want_f.ssc.subgroupSizeControl = info_.subgroup_size_control;
    want_f.ssc.computeFullSubgroups = info_.subgroup_size_control;
    VkPhysicalDeviceFeatures have;
    vkGetPhysicalDeviceFeatures(phys_, &have);
    want_f.f2.features.shaderInt64 = have.shaderInt64 && info_.int64;
    want_f.f2.features.shaderInt16 = have.shaderInt16;

    std::vector<const char*> dev_exts;
    if (contains(exts, "VK_KHR_portability_subset")) dev_exts.push_back("VK_KHR_portability_subset");
    if (info_.api_version < VK_API_VERSION_1_3 && info_.subgroup_size_control)
      dev_exts.push_back(VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = queue_family_;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    di.pNext = &want_f.f2;
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    di.enabledExtensionCount = uint32_t(dev_exts.size());
    di.ppEnabledExtensionNames = dev_exts.data();
    VK_CHECK(vkCreateDevice(phys_, &di, nullptr, &device_));
    vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
    vkGetPhysicalDeviceMemoryProperties(phys_, &mem_props_);

    VkPipelineCacheCreateInfo pci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    VK_CHECK(vkCreatePipelineCache(device_, &pci, nullptr, &pipeline_cache_));
    VkCommandPoolCreateInfo cpi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    cpi.queueFamilyIndex = queue_family_;
    VK_CHECK(vkCreateCommandPool(device_, &cpi, nullptr, &transfer_pool_));
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VK_CHECK(vkCreateFence(device_, &fci, nullptr, &transfer_fence_));
    log().info("device {}: {} ({}, Vulkan {}, subgroup {}{})", info_.index, info_.name, info_.type_name(),
               info_.api_string(), info_.subgroup_size, validation_ ? ", validation on" : "");
  } catch (...) {
    destroy();
    throw;
  }
}

Context::~Context() { destroy(); }

void Context::destroy() {
  staging_.reset();
  if (hung_) {
    // Work may still run on the device: destroying it (or the instance) would free what that
    // work uses. Both are left to the driver; only the messenger, which points at this object,
    // goes.
    log().warn("{}: leaving the hung Vulkan device to the driver", info_.name);
    if (messenger_) {
      auto destroy_messenger = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
      if (destroy_messenger) destroy_messenger(instance_, messenger_, nullptr);
    }
    device_ = VK_NULL_HANDLE;
    messenger_ = VK_NULL_HANDLE;
    instance_ = VK_NULL_HANDLE;
    return;
  }
  if (device_) {
    vkDeviceWaitIdle(device_);
    if (transfer_fence_) vkDestroyFence(device_, transfer_fence_, nullptr);
    if (transfer_pool_) vkDestroyCommandPool(device_, transfer_pool_, nullptr);
    if (pipeline_cache_) vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
    vkDestroyDevice(device_, nullptr);
    device_ = VK_NULL_HANDLE;
    transfer_fence_ = VK_NULL_HANDLE;
    transfer_pool_ = VK_NULL_HANDLE;
    pipeline_cache_ = VK_NULL_HANDLE;
  }
  if (messenger_) {
    auto destroy_messenger = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    if (destroy_messenger) destroy_messenger(instance_, messenger_, nullptr);
    messenger_ = VK_NULL_HANDLE;
  }
  if (instance_) {
    vkDestroyInstance(instance_, nullptr);
    instance_ = VK_NULL_HANDLE;
  }
}

VkBool32 VKAPI_CALL Context::debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                            VkDebugUtilsMessageTypeFlagsEXT,
                                            const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  auto* self = static_cast<Context*>(user);
  const char* msg = data && data->pMessage ? data->pMessage : "(no message)";
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    self->validation_errors_.fetch_add(1);
    std::lock_guard<std::mutex> lock(self->msg_mutex_);
    self->last_validation_message_ = msg;
    log().error("vulkan validation: {}", msg);
  } else {
    log().warn("vulkan validation: {}", msg);
  }
  return VK_FALSE;
}

std::string Context::last_validation_message() const {
  std::lock_guard<std::mutex> lock(msg_mutex_);
  return last_validation_message_;
}

int Context::find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags want) const {
  for (uint32_t i = 0; i < mem_props_.memoryTypeCount; ++i)
    if ((type_bits & (1u << i)) && (mem_props_.memoryTypes[i].propertyFlags & want) == want) return int(i);
  return -1;
}

Buffer& Context::staging(uint64_t bytes) {
  if (!staging_ || staging_->size() < bytes) {
    staging_.reset();
    staging_ = std::make_unique<Buffer>(*this, bytes, BufferKind::Staging, "staging");
  }
  return *staging_;
}

void Context::wait_fence(VkFence fence) const {
  VkResult r = vkWaitForFences(device_, 1, &fence, VK_TRUE, fence_timeout_ns_);
  if (r == VK_TIMEOUT) {
    hung_ = true;
    char secs[32];
    std::snprintf(secs, sizeof secs, "%g", double(fence_timeout_ns_) * 1e-9);
    throw Error(ErrorKind::Device, "GPU work did not finish within " + std::string(secs) + " s on " + info_.name +
                                       " (" + fence_timeout_from_ +
                                       "); the device may be hung and this context is unusable");
  }
  if (r == VK_ERROR_DEVICE_LOST)
    lost_ = true;
  else if (r != VK_SUCCESS)
    hung_ = true;  // the work may still be pending: nothing may reuse it
  VK_CHECK(r);
}

void Context::check_usable() const {
  if (hung_ || lost_)
    throw Error(ErrorKind::Device, std::string("the Vulkan device ") + info_.name + " is unusable after " +
                                       (hung_ ? "GPU work timed out" : "it was lost") +
                                       "; create a new context (or session) to go on");
}

void Context::submit(VkCommandBuffer cb, VkFence fence) {
  check_usable();
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cb;
  std::lock_guard<std::mutex> lock(queue_mutex_);  // vkQueueSubmit needs the queue externally synchronized
  check_usable();                                  // again: another thread may have timed out meanwhile
  const VkResult r = vkQueueSubmit(queue_, 1, &si, fence);
  if (r == VK_ERROR_DEVICE_LOST) lost_ = true;
  VK_CHECK(r);
}

void Context::run_once(const std::function<void(VkCommandBuffer)>& record) {
  std::lock_guard<std::mutex> lock(transfer_mutex_);
  check_usable();  // the transfer fence may still be pending
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = transfer_pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkCommandBuffer cb;
  VK_CHECK(vkAllocateCommandBuffers(device_, &ai, &cb));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  try {
    VK_CHECK(vkBeginCommandBuffer(cb, &bi));
    record(cb);
    VK_CHECK(vkEndCommandBuffer(cb));
    VK_CHECK(vkResetFences(device_, 1, &transfer_fence_));
    submit(cb, transfer_fence_);
    wait_fence(transfer_fence_);
  } catch (...) {
    if (!hung_) vkFreeCommandBuffers(device_, transfer_pool_, 1, &cb);  // a hung one may still run
    throw;
  }
  vkFreeCommandBuffers(device_, transfer_pool_, 1, &cb);
}

}  // namespace snapvk
