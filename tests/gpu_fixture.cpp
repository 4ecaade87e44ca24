#include "tests/gpu_fixture.h"

#include <cmath>
#include <memory>
#include <random>
#include <string>

#include "tests/test_util.h"

namespace snapvk::test {

namespace {
// Created on first use and never destroyed: destructors that run from exit handlers would call
// into the validation layer after its own static state is gone (it is loaded after ours, so
// torn down first). The OS reclaims everything at exit.
Context* g_ctx = nullptr;
Kernels* g_kernels = nullptr;
std::string g_error;
bool g_tried = false;

void init() {
  if (g_tried) return;
  g_tried = true;
  try {
    ContextOptions opts;
    opts.validation = true;  // tests always run under the Khronos validation layer
    auto ctx = std::make_unique<Context>(opts);
    auto kernels = std::make_unique<Kernels>(*ctx);
    g_ctx = ctx.release();
    g_kernels = kernels.release();
  } catch (const std::exception& e) {
    g_error = e.what();
  }
}
}  // namespace

Context& gpu() {
  init();
  if (!g_ctx) throw Error(ErrorKind::Device, "no usable Vulkan device for GPU tests: " + g_error);
  return *g_ctx;
}

Kernels& kernels() {
  gpu();
  return *g_kernels;
}

Model& stories_model() {
  static Model* m = new Model(kernels(), model_path("stories260K.gguf"));
  return *m;
}

Model& smollm2_model() {
  static Model* m = new Model(kernels(), model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  return *m;
}

void check_validation(uint64_t before) {
  if (!g_ctx) return;
  const uint64_t now = g_ctx->validation_errors();
  if (now > before)
    ADD_FAILURE() << (now - before) << " Vulkan validation error(s); last: " << g_ctx->last_validation_message();
}

void VkTest::SetUp() {
  init();
  if (!g_ctx) GTEST_FAIL() << "no usable Vulkan device for GPU tests: " << g_error;
  errors_before_ = g_ctx->validation_errors();
}

void VkTest::TearDown() { check_validation(errors_before_); }

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (std::isnan(d)) return NAN;  // a NaN anywhere is a failure
    m = std::max(m, d);
  }
  return m;
}

}  // namespace snapvk::test
