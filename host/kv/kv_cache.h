#pragma once
// The KV cache of one conversation: per layer, rows of K and V and the heads table that lays
// them out per KV head (shaders/heads.glsl). One table serves the full cache, a
// uniformly compacted one (SnapKV, PyramidKV, StreamingLLM, H2O) and Ada-KV's per-head budgets,
// so one set of attention kernels reads them all. The cache also answers the memory model's
// size questions, and is the unit that a saved pack or a server's slot holds.
#include <cstdint>
#include <vector>

#include "host/kernels/attention.h"
#include "host/kv/kv_policy.h"
#include "host/model/model.h"
#include "runtime/commands.h"
#include "runtime/memory.h"

namespace snapvk {

// One layer's cache: head h's rows start at offset[h]; its first base[h] rows hold retained
// prompt entries, the appended tokens follow. A sliding-window layer (window > 0) is a ring of
// `ring` rows per head instead, position p at row p % ring, never compacted.
struct KvLayer {
  Buffer k, v;                    // [n_rows] rows of kv_row_words(types.k or .v, head_dim) words
  Buffer heads;                   // [n_kv][2] u32: offset, base (the device copy of the table)
  std::vector<uint32_t> offset;   // [n_kv]
  std::vector<uint32_t> base;     // [n_kv]
  uint32_t n_rows = 0;            // every head's
  uint32_t window = 0, ring = 0;  // a sliding-window layer (KvWindow)
  KvWindow kv_window() const { return {window, ring}; }
};

// Retained prompt positions [layer][kv head], ascending, window included.
using KvSelection = std::vector<std::vector<std::vector<uint32_t>>>;

// One layer's whole prompt as a compressing prefill leaves it: what compaction reads.
struct PromptLayer {
  const Buffer& k;  // [n_kv][L] rows, laid out by `heads` (offset h * L, base 0)
  const Buffer& v;
  const Buffer& heads;
  const Buffer& q_win;  // [n_q][q_dim] f32: the voting queries (the last n_q rows), rotated
  uint32_t L = 0, n_q = 0;
  const Buffer* words = nullptr;  // [L] u32: the word of each token, numbered (word_numbers(); for
                                  // KvPolicyOptions::complete_words; none: no completion)
};

// A cache's contents in host memory, as a pack stores them (docs/packs.md): per layer, each
// head's rows in use, head after head. Independent of n_ctx, so a cache restores into a session
// of any context that holds it.
struct KvLayerImage {
  uint32_t window = 0;         // a sliding-window layer's window (0: a global layer)
  std::vector<uint32_t> base;  // [n_kv] retained prompt rows (a full cache or a ring: 0)
  std::vector<uint32_t> rows;  // [n_kv] rows held: base + appended (a ring: the last positions, oldest first)
  std::vector<uint8_t> k, v;   // [sum(rows)] rows of kv_row_bytes(types.k or .v, head_dim)
  std::vector<float> k_center; // [n_kv * head_dim] a rotated K type's centre (KvCache::KCenter); else empty
};
struct KvImage {
  uint32_t compacted_len = 0;        // KvCache::compacted_len(): 0 for a full cache
  uint32_t n_past = 0;               // positions held
  std::vector<KvLayerImage> layers;  // [n_layer]
};

// Sizes of a cache after an L-token prompt with n_ctx positions in all.
struct KvSize {
  uint64_t allocated = 0;  // device bytes: K/V rows, and the heads tables of a compacted cache
  uint64_t retained = 0;   // K/V bytes of the prompt's retained entries plus the room for new tokens
                           // (a sliding-window layer: its window, of a ring of window + n_batch - 1)
};

class KvCache {
 public:
  // n_batch: most tokens one forward step appends (sizes the rings of sliding-window layers).
  KvCache(const Model& model, KvTypes types, uint32_t n_ctx, uint32_t n_batch);

  // A full cache: every head n_ctx rows, nothing retained yet.
  void allocate_full();
  // Drops every layer: a compacted cache is sized by its prompt (begin_prompt).
  void clear();
  // Starts the compacted cache of an L-token prompt (sliding-window layers get their rings now);
  // compact_layer() then fills each global layer.
  void begin_prompt(uint32_t L, bool keep_selection);
  // Keeps what `pol` selects of layer l's prompt (docs/snapkv.md, steps 3-7): records the
  // selection and the gather into `cs` (begun and submitted here) and allocates the layer.
  void compact_layer(CommandStream& cs, uint32_t l, const PromptLayer& p, const KvPolicyOptions& pol);

  // The contents for n_past positions (downloaded from the device).
  KvImage save(uint32_t n_past) const;
  // Replaces the contents by `img`, checked against this cache's model and context first (throws
  // InvalidArgument, nothing changed). A full cache keeps its buffers; a compacted one is
  // allocated for img's retained rows plus the room the context leaves.
  void restore(const KvImage& img);
  // Forgets the last n rows of every head of a compacted prompt with nothing appended yet (a
  // question-aware pack drops its question, the observation window, after selection).
  void drop_prompt_tail(uint32_t n);
  // Endless chat: compacts global layer l (uniform heads, rows[h] = base[h] + appended) again to
  // `pol`'s budget, with q_win (the last n_q rows' rotated queries) voting. Reads through
  // scratch_k/v ([n_kv * rows] each, allocated once by the caller), writes in place: no allocation
  // of the cache itself. Call for every global layer, then end_recompress().
  void recompress_layer(CommandStream& cs, uint32_t l, uint32_t appended, const Buffer& q_win, uint32_t n_q,
                        const KvPolicyOptions& pol, const Buffer& scratch_k, const Buffer& scratch_v,
                        Buffer& scratch_heads);
  // After recompress_layer over every global layer: all n_past positions are compacted now.
  void end_recompress(uint32_t n_past);
  // Starts a compacted cache whose global layers hold `per_head` rows per head for good (endless
  // chat: the budget plus a turn), so recompression never reallocates; it then holds any number
  // of positions.
  void set_fixed_rows(uint32_t per_head) { fixed_rows_ = per_head; }
  uint32_t fixed_rows() const { return fixed_rows_; }  // 0: sized by each prompt

  KvTypes types() const { return types_; }
  uint32_t n_ctx() const { return n_ctx_; }
  uint32_t room() const { return room_; }  // rows per head for appended tokens
  // Positions the retained rows were compacted from: the compressed prompt's L, all positions
  // held after recompression; 0 for a full cache. Rows appended since: n_past - compacted_len.
  uint32_t compacted_len() const { return compacted_len_; }
  uint64_t allocated_bytes() const { return bytes_; }  // device bytes of every K/V buffer
  bool empty() const { return layers_.empty(); }
  const KvLayer& layer(uint32_t l) const { return layers_.at(l); }
  // A rotated K type's centre of layer l (shaders/k_center.comp): set from the first keys the
  // layer stores, then subtracted from every key before it is stored (softmax does not see it).
  // Its own buffer, beside the layer's: a compressing prefill fills a transient layer with it
  // before the layer itself is allocated. Null for the other K types.
  struct KCenter {
    Buffer c;          // [n_kv, head_dim] f32
    bool set = false;  // c holds the layer's centre (cleared with the cache)
  };
  KCenter* center(uint32_t l) { return centers_.empty() ? nullptr : &centers_.at(l); }
  const std::vector<KvLayer>& layers() const { return layers_; }
  // Retained prompt positions (when begin_prompt was asked to keep them).
  const KvSelection& selection() const { return selection_; }
  // Most entries any head holds once `appended` tokens follow the retained ones.
  uint32_t max_len(uint32_t appended) const;
  // K/V bytes held for n_past positions (retained entries plus those appended since).
  uint64_t held_bytes(uint32_t n_past) const;

  // The table of a uniform layout: head h at h * per_head, `base` retained entries.
  static std::vector<uint32_t> uniform_table(uint32_t n_kv, uint32_t per_head, uint32_t base);
  // Rows per head of a sliding-window layer: the window plus a batch of new tokens (a batch's
  // queries still see the window before it while it is stored; llama.cpp sizes its SWA cache
  // n_swa + n_ubatch alike), at most n_ctx.
  static uint32_t ring_rows(const ModelConfig& c, uint32_t n_ctx, uint32_t n_batch);
  // Bytes a full cache of type t needs for `tokens` positions (all layers, K and V); a
  // sliding-window layer needs at most its window.
  static uint64_t full_bytes(const ModelConfig& c, KvTypes t, uint64_t tokens);
  // What a cache takes after an L-token prompt with n_ctx positions and n_batch-token steps:
  // full, or compacted by `pol` (global layers only; sliding-window layers hold their rings).
  static KvSize size_after_prompt(const ModelConfig& c, KvTypes t, const KvPolicyOptions& pol, uint32_t L,
                                  uint32_t n_ctx, uint32_t n_batch);
  // Device bytes restore(img) allocates in a cache of n_ctx positions: a full image the full
  // cache; a compacted one, per global layer and KV head, its retained rows and room for
  // n_ctx - compacted_len more, plus the heads tables (counted as size_after_prompt counts them).
  static uint64_t bytes_after_restore(const ModelConfig& c, KvTypes t, const KvImage& img, uint32_t n_ctx,
                                      uint32_t n_batch);
  // Device bytes of the scratch one layer's compaction needs (scores, pooling, selection).
  static uint64_t compaction_scratch_bytes(const ModelConfig& c, const KvPolicyOptions& pol, uint32_t L,
                                           uint32_t budget);

 private:
  KvLayer& allocate_layer(uint32_t l, uint32_t per_head, uint32_t base, bool upload_table);
  // Head h gets cap[h] rows, base[h] of them retained.
  KvLayer& allocate_heads(uint32_t l, const std::vector<uint32_t>& cap, const std::vector<uint32_t>& base);
  void upload_table(KvLayer& L);
  void check_image(const KvImage& img) const;
  void allocate_ring(uint32_t l);

  const Model& model_;
  KvTypes types_;
  uint32_t n_ctx_, n_batch_;
  std::vector<KvLayer> layers_;
  std::vector<KCenter> centers_;  // [n_layer] when K is a rotated type
  uint32_t room_ = 0;
  uint32_t compacted_len_ = 0;
  uint64_t bytes_ = 0;
  bool keep_selection_ = false;
  uint32_t fixed_rows_ = 0;  // endless chat: rows per head of every global layer (0: sized by the prompt)
  KvSelection selection_;
};

// GPU time of the compression passes recorded into a stream, by kernel category.
struct CompressTimes {
  double score_ms = 0, pool_ms = 0, select_ms = 0, gather_ms = 0;
};
CompressTimes compress_times(const CommandStream& cs);

}  // namespace snapvk
