#pragma once
// How many loop iterations one shader invocation runs. llvmpipe (lavapipe, Mesa's CPU driver)
// guards against endless loops with one counter per invocation that every loop back-edge of
// the shader decrements, from 65535 (LP_MAX_TGSI_LOOP_ITERATIONS); at zero every loop exits
// early and the kernel ends with what it has: a wrong answer and no error. A loop marked
// [[unroll]] whose trip count is a constant or a specialization constant is unrolled before
// that counter exists and costs nothing; every other loop counts, nested ones once per
// iteration of the loops around them.
//
// So each op states the rolled loops its kernel runs per invocation at the shape it
// dispatches (the *_loops functions beside the ops, in ops.h and attention.h). Where a shape
// needs more, the op splits the loop's range over several dispatches, as decode splits the
// cache; what no split covers is refused on a device with the counter, never run short.
// tests/test_loop_bounds.cpp holds every embedded kernel to the cap at the largest shape
// snapvk supports, and docs/reliability.md ("Loop limits") tabulates the result.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/context.h"

namespace snapvk {

inline constexpr uint64_t kLoopIterationCap = 65535;
// What the ops keep an invocation's count under. The counts here follow the source's loops; on
// llvmpipe attn_prefill's tiles ran about one back-edge per block more than counted (the tiled
// kernel failed past 471 blocks in one pass where 474 were counted to fit), so a sixteenth of
// the cap is kept spare for what the driver adds.
inline constexpr uint64_t kLoopIterationBudget = kLoopIterationCap - kLoopIterationCap / 16;

// The rolled loops of one kernel, in the order of the shader's source: for each, the most
// back-edges one invocation takes in it, all its executions together (a loop that does not run
// at this shape counts 0 but is listed: the test matches the list against the SPIR-V's loops).
struct KernelLoops {
  struct Loop {
    std::string_view what;
    uint64_t iterations = 0;
  };
  std::string_view kernel;
  std::array<Loop, 12> loops{};
  uint32_t count = 0;

  explicit KernelLoops(std::string_view kernel_name) : kernel(kernel_name) {}
  // A loop that runs `executions` times, `trips` iterations each time at most.
  KernelLoops& add(std::string_view what, uint64_t trips, uint64_t executions = 1);
  uint64_t total() const;
};

// Iterations of a loop over n items, `step` at a time (i = start; i < n; i += step), plus the
// exit test (counted as one more iteration, as a back-edge may be on some paths).
constexpr uint64_t strided(uint64_t n, uint64_t step) { return (n + step - 1) / step + 1; }
// Iterations of reduce.glsl's loop over a workgroup's subgroups (workgroup_sum, workgroup_max).
constexpr uint64_t subgroups_loop(uint64_t wg, uint64_t subgroup) { return strided(wg, subgroup ? subgroup : 1); }

// Whether this device's driver stops loops at kLoopIterationCap (llvmpipe).
bool caps_loop_iterations(const DeviceInfo& info);

// On such a device, throws Error (InvalidArgument) when `loops` would pass the budget; what()
// names the shape in the user's terms ("a prompt of 200000 tokens"), built only then.
[[noreturn]] void throw_past_loop_budget(const DeviceInfo& info, const KernelLoops& loops, const std::string& what);
template <class What>
void check_loops(const DeviceInfo& info, const KernelLoops& loops, What&& what) {
  if (loops.total() >= kLoopIterationBudget && caps_loop_iterations(info)) throw_past_loop_budget(info, loops, what());
}

}  // namespace snapvk
