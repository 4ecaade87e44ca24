#pragma once
// KV policies as selections: each policy is one function that records, into a command stream,
// the passes that choose which prompt entries of one layer each KV head keeps. The gather into
// the compacted cache (KvCache::compact_layer) is the same for all of them.
#include <cstdint>
#include <vector>

#include "host/kv/kv_policy.h"
#include "host/model/model.h"
#include "runtime/commands.h"
#include "runtime/memory.h"

namespace snapvk {

struct KvLayer;
struct PromptLayer;

// What a policy keeps of one layer's prompt, on the device. Head h keeps the prefix positions
// sel[info[2h] + i] - info[2h + 1] for i < base(h) - W, then the window's W positions.
struct LayerSelection {
  Buffer sel;                     // [max(total, 1)] u32 prefix positions, ascending per head
  Buffer info;                    // [n_kv][2] u32 (Ada-KV: written by the GPU)
  uint32_t total = 0;             // entries of sel
  uint32_t max_rows = 0;          // most retained rows of any head
  bool layout_on_device = false;  // the layer's heads table was written by the GPU (Ada-KV)
  std::vector<Buffer> scratch;    // scores and partial selections: alive until the stream is submitted
};

// One layer's selection problem: keep `count` of the P = L - W prefix positions per head (C - W),
// plus the window of W positions.
struct SelectArgs {
  CommandStream& cs;
  const Model& model;
  KvType k_type;  // the scores read K alone
  const PromptLayer& prompt;
  const KvPolicyOptions& pol;
  KvLayer& out;  // the compacted layer (allocated, uniform table; Ada-KV rewrites it)
  uint32_t W, P, count, room;
};

// SnapKV and PyramidKV: votes of the window, pooled, top-K per head; H2O: votes of every prompt query
LayerSelection select_top_per_head(const SelectArgs& a);
LayerSelection select_streamingllm(const SelectArgs& a);  // the first `sinks` positions and the most recent ones
LayerSelection select_adakv(const SelectArgs& a);         // pooled votes, a floor per head, then top-K across the layer
// The selection function of a compressing policy.
LayerSelection select_for(const SelectArgs& a);
// A layer kept whole (the prompt fits its budget): every position counts as window.
LayerSelection select_all(const SelectArgs& a);

}  // namespace snapvk
