#pragma once
// GPU tests share one Vulkan context with the Khronos validation layer on. Any validation
// error raised during a test fails that test; no Vulkan device fails every GPU test with a
// clear message (never a silent pass or skip).
#include <gtest/gtest.h>

#include <vector>

#include "host/kernels/ops.h"
#include "host/model/model.h"
#include "runtime/commands.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/memory.h"

namespace snapvk::test {

Context& gpu();  // throws snapvk::Error when there is no usable device
Kernels& kernels();

// The fixture models on the shared context, loaded on first use and, like it, never destroyed:
// one copy for every test that reads them.
Model& stories_model();  // stories260K.gguf
Model& smollm2_model();  // SmolLM2-135M-Instruct.Q4_1.gguf

// Fails the current test if validation errors were reported since `before`.
void check_validation(uint64_t before);

class VkTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  Context& ctx() { return gpu(); }
  Kernels& k() { return kernels(); }

  // Device buffer holding `data`.
  template <class T>
  Buffer upload(const std::vector<T>& data, const char* name = "test") {
    Buffer b(ctx(), (data.size() * sizeof(T) + 3) / 4 * 4, BufferKind::Device, name);
    b.upload(data.data(), data.size() * sizeof(T));
    return b;
  }
  template <class T>
  std::vector<T> download(const Buffer& b, size_t count) {
    std::vector<T> out(count);
    b.download(out.data(), count * sizeof(T));
    return out;
  }

  uint64_t errors_before_ = 0;  // validation errors counted before this test
};

// Deterministic pseudo-random floats in [lo, hi).
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);
// Largest |a - b| over the two vectors, and the same relative to max(|b|, floor).
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace snapvk::test
