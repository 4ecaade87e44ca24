#pragma once
// A session: one conversation's KV cache and activations on the device. prefill() runs prompt
// tokens in batches (matrix-matrix), decode() one token (matrix-vector). With a compressing KV
// policy the first prompt is prefilled layer by layer and each layer's cache is compacted
// (SnapKV and family) before the next layer runs, so only one layer's full K/V ever exists.
#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "host/kernels/attention.h"
#include "host/kv/kv_cache.h"
#include "host/kv/kv_policy.h"
#include "host/model/model.h"
#include "host/session/options.h"
#include "runtime/commands.h"
#include "runtime/error.h"

namespace snapvk {

// A session's options. Those a user sets are the rows of SNAPVK_SESSION_OPTIONS
// (host/session/options.h); the rest are for tools and tests.
struct SessionOptions {
  uint32_t n_ctx = 0;              // positions (prompt + generated); 0: the model's training context, at most 4096
  uint32_t n_batch = kDefaultBatch;  // prompt tokens per prefill step
  KvType kv_type_k = KvType::F16;   // K cache storage
  KvType kv_type_v = KvType::F16;   // V cache storage
  KvPolicyOptions kv;                // full cache by default
  bool keep_selection = false;  // remember the retained positions (for --dump-kv-selection and tests)
  bool profile = false;         // per-kernel GPU timestamps of every dispatch
  bool row_logits = false;      // allocate [n_batch][n_vocab] logits so prefill_rows() can score every token
  KvTypes kv_types() const { return {kv_type_k, kv_type_v}; }
  void set_kv_types(KvTypes t) { kv_type_k = t.k, kv_type_v = t.v; }
  // Called during prefill with work done and total (in token-layers); return false to cancel.
  std::function<bool(uint64_t done, uint64_t total)> on_progress;
};

// The positions a session holds when SessionOptions::n_ctx is 0.
uint32_t default_n_ctx(const ModelConfig& c);

// What compression did, for reports.
struct KvStats {
  uint64_t full_bytes = 0;      // what a full cache needs for the tokens held
  uint64_t retained_bytes = 0;  // what the session's cache holds for them
  uint64_t allocated_bytes = 0;
  double ratio() const { return retained_bytes ? double(full_bytes) / double(retained_bytes) : 1.0; }
  double score_ms = 0, pool_ms = 0, select_ms = 0, gather_ms = 0;  // GPU time of the compression passes
  double prefill_ms = 0;                                           // wall time of the last prefill
};

// Per-step activations, f32 unless noted; B = n_batch.
struct Activations {
  Buffer x;       // [B, n_embd] residual stream (prompt rows live in the prefill's own buffer)
  Buffer xn;      // [B, n_embd] normed input / sublayer output
  Buffer q;       // [B, q_dim]
  Buffer k, v;    // [B, kv_dim]
  Buffer attn;    // [B, q_dim] attention output
  Buffer gate;    // [B, n_ff]
  Buffer up;      // [B, n_ff]
  Buffer qkv1;    // [q_dim + 2 kv_dim]: one token's q, k, v from the stacked projection (LayerWeights::wqkv); a session's only
  Buffer part;    // decode attention partials
  Buffer ids;     // [B] int32 token ids, host-visible
  Buffer logits;  // [n_vocab], host-visible
  Buffer rows;    // [B, n_vocab], host-visible, only with SessionOptions::row_logits
};

// The row buffers of `a` for B rows (x, xn, q, k, v, attn, gate, up, ids), names prefixed: a
// session's prefill batch or a decode batch's sequences.
void allocate_rows(Activations& a, Context& ctx, const ModelConfig& c, uint64_t B, const std::string& prefix);

// The logits after prompt token i (i counts from the first token of the call).
using RowLogitsFn = std::function<void(uint32_t i, std::span<const float> logits)>;
class Session;

// Where the forward pass keeps each global layer's rotated queries of the latest `rows` positions,
// for an owner that votes with them later (EndlessChat): position p at row p % rows.
struct QuerySink {
  const Buffer* ring = nullptr;  // [n_layer][rows][q_dim] f32
  uint32_t rows = 0;
};

// Buffers for decoding one token of each of several sessions of one model in one forward pass
// (Session::decode_batch): activations for max_seqs rows and their logits. Allocated once (a
// server holds one); each session's own cache and attention partials are used in place.
struct DecodeBatch {
  DecodeBatch(const Model& m, uint32_t max_seqs);
  // Device bytes it allocates (for the memory model).
  static uint64_t bytes(const ModelConfig& c, uint32_t max_seqs);
  // Whether this device can bind each sequence's rows at their offsets (alignment).
  static bool fits(const Model& m);

  uint32_t max_seqs = 0;
  Activations act;  // [max_seqs] rows; act.part is unused (each session has its own)
  CommandStream cs;
};

class Session {
 public:
  Session(const Model& model, const SessionOptions& opts = {});

  // Appends tokens at the current position and returns the logits after the last one.
  std::span<const float> prefill(std::span<const int32_t> tokens);
  // Appends tokens like prefill() (never compressing them: the session must hold a prompt
  // already, or use the full cache) and hands the logits after every one of them to `on_row`,
  // in order: what perplexity needs. Requires SessionOptions::row_logits.
  void prefill_rows(std::span<const int32_t> tokens, const RowLogitsFn& on_row);
  // Appends one token and returns the logits after it.
  std::span<const float> decode(int32_t token);
  // Appends tokens[i] to sessions[i], all in one forward pass: the projections and the FFN run as
  // matrix products over the rows, each row attends to its own session's cache. Then each
  // session's logits() are those after its token. The sessions must share a model and have a
  // prompt and room for one more token; a batch of one runs the session's own decode().
  static void decode_batch(DecodeBatch& b, std::span<Session* const> sessions, std::span<const int32_t> tokens);
  // The logits after the last token prefilled or decoded.
  std::span<const float> logits() const { return logits_; }
  // Forgets every token; the next prefill starts a new prompt (and is compressed again).
  void reset();
  // The cache's contents and position (a pack's payload; docs/packs.md).
  KvImage save_state() const { return cache_.save(n_past_); }
  // Replaces the session's state by `img` and the logits after its last token (empty: zeros, a
  // prefill must come before generating). Checked before anything changes; a failure part-way
  // (out of memory) leaves the session empty.
  void restore_state(const KvImage& img, std::span<const float> logits);
  // Forgets the last n tokens of a compressed first prompt, right after its prefill (a
  // question-aware pack keeps the document and drops the question that voted).
  void drop_prompt_tail(uint32_t n);
  // Asks a running prefill (on another thread) to stop at its next batch, or the next call to
  // start if none is running; that call throws Cancelled.
  void cancel() { cancel_requested_.store(true); }

  uint32_t n_past() const { return n_past_; }
  // Rows the cache's fullest head may still take: the tokens the next prefill may append.
  uint32_t free_rows() const;
  uint32_t n_ctx() const { return opts_.n_ctx; }
  const Model& model() const { return model_; }
  const SessionOptions& options() const { return opts_; }
  const KvCache& cache() const { return cache_; }
  KvStats kv_stats() const;
  // Retained prompt positions [layer][kv head], ascending, window included (keep_selection).
  const KvSelection& selection() const { return cache_.selection(); }
  CommandStream& stream() { return cs_; }

  // For an owner that compacts the cache in place between calls (EndlessChat). Before the first
  // prompt: the cache's global layers get n_ctx rows per head for good, and the session is then
  // bounded by the rows it holds, not by positions, which go on past n_ctx.
  void fix_cache_rows() { cache_.set_fixed_rows(opts_.n_ctx); }
  KvCache& cache_to_compact() { return cache_; }
  // Every forward pass from now on copies its queries into `sink` (its ring must stay alive while
  // the session runs); queries_held() counts the latest positions whose queries it holds, at most
  // sink.rows (none after a reset or a restored state: a pack holds no queries).
  void set_query_sink(const QuerySink& sink) { sink_ = sink, queries_held_ = 0; }
  uint32_t queries_held() const { return queries_held_; }

 private:
  struct KvView;
  struct SeqAttention;
  // One transformer block over T rows of x into cs with activations a; seqs: one sequence of T
  // rows, or T sequences of one row each (decode_batch). Returns where the first sequence's
  // queries went (rotated): its q, or one token's stacked q (Activations::qkv1).
  static BufferRange record_layer(const Model& m, CommandStream& cs, Activations& a, uint32_t l, uint32_t T, BufferRange x,
                           std::span<const SeqAttention> seqs);
  static void record_attention(const Model& m, CommandStream& cs, uint32_t l, uint32_t T,
                               std::span<const SeqAttention> seqs);
  void forward(const int32_t* tokens, uint32_t T, bool logits, const RowLogitsFn* rows = nullptr);  // forward.cpp
  void check_tokens(std::span<const int32_t> tokens) const;
  void prefill_compressed(std::span<const int32_t> tokens);  // host/session/forward.cpp
  BufferRange layer(uint32_t l, uint32_t T, BufferRange x, const KvView& kv, uint32_t row0, uint32_t pos0,
                    uint32_t decode_len);        // host/session/forward.cpp; record_layer's queries
  void logits_of_row(BufferRange x_row);         // host/session/forward.cpp
  void logits_of_rows(uint32_t T);               // host/session/forward.cpp
  void embed(BufferRange x, uint32_t T);         // host/session/forward.cpp
  void progress(uint64_t done, uint64_t total);  // throws Cancelled when asked to stop
  void queries_written(size_t n);                // n more positions went through the query sink
  void check_fits(size_t T) const;               // throws when T more tokens do not fit

  const Model& model_;
  SessionOptions opts_;
  KvCache cache_;
  Activations act_;
  CommandStream cs_;
  CommandStream cs_compress_;  // always timed: the compression report needs its GPU times
  QuerySink sink_;             // none unless set_query_sink
  uint32_t n_past_ = 0;
  uint32_t queries_held_ = 0;  // latest positions whose queries sink_ holds
  std::vector<float> logits_;
  KvStats last_;
  std::atomic<bool> cancel_requested_{false};
};

}  // namespace snapvk
