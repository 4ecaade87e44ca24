#include "host/session/session.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "host/session/memory_model.h"
#include "runtime/checked.h"
#include "runtime/vk_check.h"

namespace snapvk {

namespace {
// Refuses, before allocating anything, what the memory model says cannot fit the context's
// budget, and holds those bytes for this thread's allocations until the hold ends (so another
// session created at the same time cannot take them in between).
MemoryTracker::Hold hold_budget(const Model& m, const SessionOptions& o, uint32_t prompt_len,
                                uint64_t already_counted) {
  if (!m.ctx().memory().budget()) return {};
  MemoryEstimate e = estimate_memory(m.config(), 0, memory_query(m, o, prompt_len));
  if (prompt_len == 0) e.peak = e.activations, e.kv_cache = e.prefill_transient = 0;  // a compressed cache comes later
  const uint64_t need = e.peak > already_counted ? e.peak - already_counted : 0;      // weights are already counted
  return m.ctx().memory().hold(need, [&](uint64_t in_use, uint64_t budget) {
    return "does not fit the device memory budget: " +
           (o.kv.compresses()
                ? std::to_string(prompt_len) + "-token prompt with KV policy " + kv_policy_name(o.kv.policy)
                : std::string("a full KV cache")) +
           " and n_ctx " + std::to_string(o.n_ctx) + " needs " + format_bytes(need) + " more (KV cache " +
           format_bytes(e.kv_cache) + ", prefill buffers " + format_bytes(e.prefill_transient) + ", activations " +
           format_bytes(e.activations) + "); " + format_bytes(in_use) + " in use of " + format_bytes(budget);
  });
}

SessionOptions with_default_ctx(const Model& m, SessionOptions o) {
  if (o.n_ctx == 0) o.n_ctx = default_n_ctx(m.config());
  return o;
}
}  // namespace

uint32_t default_n_ctx(const ModelConfig& c) { return std::min<uint32_t>(c.n_ctx_train, 4096); }

Session::Session(const Model& model, const SessionOptions& opts)
    : model_(model),
      opts_(with_default_ctx(model, opts)),
      cache_(model, opts_.kv_types(), opts_.n_ctx, std::min(opts_.n_batch, opts_.n_ctx)),
      cs_(model.ctx()),
      cs_compress_(model.ctx()) {
  const ModelConfig& c = model.config();
  Context& ctx = model.ctx();
  if (opts_.n_batch == 0) throw Error(ErrorKind::InvalidArgument, "n_batch must be at least 1", opt::n_batch);
  c.check();
  check_session_shape(c, opts_.n_ctx, opts_.n_batch);
  check_kv_types(opts_.kv_types(), c.head_dim);
  model.attention().prepare(opts_.kv_types());  // its kernels now, not during its first step
  opts_.kv.validate();
  // A layer's K (and V) for n_ctx positions is one storage binding (the cache, or a compressing
  // prefill's transient layer): it must fit the device's largest binding.
  const uint64_t kv_row =
      uint64_t(c.n_head_kv) * std::max(kv_row_bytes(opts_.kv_type_k, c.head_dim), kv_row_bytes(opts_.kv_type_v, c.head_dim));
  const uint64_t max_range = ctx.info().max_storage_buffer_range;
  if (max_range && kv_row * opts_.n_ctx > max_range)
    throw Error(ErrorKind::InvalidArgument,
                "n_ctx " + std::to_string(opts_.n_ctx) + " needs K and V buffers of " +
                    format_bytes(kv_row * opts_.n_ctx) + " per layer, more than " + ctx.info().name +
                    " binds at once (maxStorageBufferRange " + format_bytes(max_range) +
                    "); the largest n_ctx for this model and KV type here is " + std::to_string(max_range / kv_row),
                opt::n_ctx);
  opts_.n_batch = std::min(opts_.n_batch, opts_.n_ctx);
  // A full cache is allocated now; a compressed one is checked again when its prompt arrives.
  const MemoryTracker::Hold hold = hold_budget(model, opts_, opts_.kv.compresses() ? 0 : opts_.n_ctx, 0);
  cs_.set_profiling(opts_.profile);
  cs_compress_.set_profiling(true);

  const uint64_t B = opts_.n_batch, f = 4;
  allocate_rows(act_, ctx, c, B, "");
  act_.qkv1 = Buffer(ctx, (uint64_t(c.q_dim()) + 2ull * c.kv_dim()) * 4, BufferKind::Device, "qkv1");
  act_.part = Buffer(
      ctx, attn_scratch_floats(model.attention().decode_chunk, c.head_dim, c.n_head, opts_.n_ctx, opts_.n_batch) * f,
      BufferKind::Device, "attn_part");
  act_.logits = Buffer(ctx, uint64_t(c.n_vocab) * f, BufferKind::Staging, "logits");
  if (opts_.row_logits) act_.rows = Buffer(ctx, B * c.n_vocab * f, BufferKind::Staging, "row_logits");
  logits_.resize(c.n_vocab);
  if (!opts_.kv.compresses()) cache_.allocate_full();
}

void Session::restore_state(const KvImage& img, std::span<const float> logits) {
  if (!logits.empty() && logits.size() != logits_.size())
    throw Error(ErrorKind::InvalidArgument, "saved logits of " + std::to_string(logits.size()) +
                                                " entries for a vocabulary of " + std::to_string(logits_.size()));
  if (img.n_past == 0) throw Error(ErrorKind::InvalidArgument, "saved state holds no tokens");
  try {
    cache_.restore(img);
  } catch (...) {
    n_past_ = 0;
    if (opts_.kv.compresses()) cache_.clear();
    throw;
  }
  n_past_ = img.n_past;
  queries_held_ = 0;
  last_ = KvStats{};
  if (logits.empty())
    std::fill(logits_.begin(), logits_.end(), 0.0f);
  else
    std::copy(logits.begin(), logits.end(), logits_.begin());
}

void Session::drop_prompt_tail(uint32_t n) {
  if (!opts_.kv.compresses() || n_past_ != cache_.compacted_len() || n >= n_past_)
    throw Error(ErrorKind::InvalidArgument, "only a compressed first prompt's last tokens can be dropped");
  cache_.drop_prompt_tail(n);
  n_past_ -= n;
  queries_held_ = 0;
  std::fill(logits_.begin(), logits_.end(), 0.0f);  // the logits were the dropped token's
}

uint32_t Session::free_rows() const {
  // a cache of fixed rows (compacted in place by its owner) holds any number of positions; any
  // other has rows for n_ctx positions (a compacted one: n_ctx - L after each head's retained rows)
  const uint32_t used =
      cache_.fixed_rows() && !cache_.empty() ? cache_.max_len(n_past_ - cache_.compacted_len()) : n_past_;
  return opts_.n_ctx - used;
}

void Session::queries_written(size_t n) {
  if (sink_.ring) queries_held_ = uint32_t(std::min<size_t>(sink_.rows, queries_held_ + n));
}

void Session::check_fits(size_t T) const {
  const uint32_t used = opts_.n_ctx - free_rows();
  if (T > opts_.n_ctx - used)  // used <= n_ctx; a sum could wrap for a huge size
    throw Error(ErrorKind::InvalidArgument,
                "prompt of " + std::to_string(T) + " tokens does not fit the context: " + std::to_string(used) +
                    " used of " + std::to_string(opts_.n_ctx) + " (raise the context size)",
                opt::n_ctx);
  if (T > kMaxContext - n_past_)  // positions past n_ctx: a cache of fixed rows
    throw Error(ErrorKind::InvalidArgument, "the conversation has reached the last position snapvk handles");
}

void allocate_rows(Activations& a, Context& ctx, const ModelConfig& c, uint64_t B, const std::string& prefix) {
  const uint64_t f = 4;
  a.x = Buffer(ctx, B * c.n_embd * f, BufferKind::Device, prefix + "x");
  a.xn = Buffer(ctx, B * c.n_embd * f, BufferKind::Device, prefix + "xn");
  a.q = Buffer(ctx, B * c.q_dim() * f, BufferKind::Device, prefix + "q");
  a.k = Buffer(ctx, B * c.kv_dim() * f, BufferKind::Device, prefix + "k");
  a.v = Buffer(ctx, B * c.kv_dim() * f, BufferKind::Device, prefix + "v");
  a.attn = Buffer(ctx, B * c.q_dim() * f, BufferKind::Device, prefix + "attn");
  a.gate = Buffer(ctx, B * c.n_ff * f, BufferKind::Device, prefix + "gate");
  a.up = Buffer(ctx, B * c.n_ff * f, BufferKind::Device, prefix + "up");
  a.ids = Buffer(ctx, B * 4, BufferKind::Staging, prefix + "ids");
}

void Session::reset() {
  n_past_ = 0;
  queries_held_ = 0;
  last_ = KvStats{};
  if (opts_.kv.compresses()) cache_.clear();  // the next prompt is compressed into a newly sized cache
}

void Session::check_tokens(std::span<const int32_t> tokens) const {
  if (tokens.empty()) throw Error(ErrorKind::InvalidArgument, "empty prompt");
  check_fits(tokens.size());
  const int32_t n_vocab = int32_t(model_.config().n_vocab);
  for (int32_t t : tokens)
    if (t < 0 || t >= n_vocab)
      throw Error(ErrorKind::InvalidArgument, "token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                                  std::to_string(n_vocab - 1) + ")");
}

void Session::prefill_rows(std::span<const int32_t> tokens, const RowLogitsFn& on_row) {
  if (!opts_.row_logits)
    throw Error(ErrorKind::InvalidArgument, "prefill_rows needs a session made with SessionOptions::row_logits");
  if (n_past_ == 0 && opts_.kv.compresses())
    throw Error(ErrorKind::InvalidArgument, "prefill_rows appends to a prompt: prefill the compressed prompt first");
  check_tokens(tokens);
  if (cancel_requested_.exchange(false)) throw Cancelled();
  const uint32_t n_past_before = n_past_;
  try {
    for (size_t i = 0; i < tokens.size(); i += opts_.n_batch) {
      const uint32_t T = uint32_t(std::min<size_t>(opts_.n_batch, tokens.size() - i));
      const RowLogitsFn rows = [&](uint32_t r, std::span<const float> lg) { on_row(uint32_t(i) + r, lg); };
      forward(tokens.data() + i, T, true, &rows);
    }
  } catch (...) {
    n_past_ = n_past_before;  // rows written past the old position are never read
    throw;
  }
  queries_written(tokens.size());
}

std::span<const float> Session::prefill(std::span<const int32_t> tokens) {
  check_tokens(tokens);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t n_past_before = n_past_;
  try {
    if (cancel_requested_.exchange(false)) throw Cancelled();  // a cancel sent before this call stops it
    if (n_past_ == 0 && opts_.kv.compresses()) {
      const ModelConfig& c = model_.config();
      const MemoryTracker::Hold hold =
          hold_budget(model_, opts_, uint32_t(tokens.size()),
                      activation_bytes(c, opts_.n_batch, opts_.n_ctx, model_.attention().decode_chunk));
      prefill_compressed(tokens);
    } else {
      const uint64_t total = tokens.size() * uint64_t(model_.config().n_layer);
      for (size_t i = 0; i < tokens.size(); i += opts_.n_batch) {
        const uint32_t T = uint32_t(std::min<size_t>(opts_.n_batch, tokens.size() - i));
        if (tokens.size() > 1) progress(i * model_.config().n_layer, total);
        forward(tokens.data() + i, T, i + T == tokens.size());
      }
      if (tokens.size() > 1) progress(total, total);
    }
  } catch (...) {
    // Cancelled or failed part-way: rows written past the old position are never read, so the
    // session is as it was (a compressed first prompt is dropped whole). Known limit: a
    // sliding-window layer's ring (window + n_batch - 1 rows) survives one batch written past
    // the old position, not two: a cancel later in a long prompt leaves its window overwritten.
    n_past_ = n_past_before;
    if (n_past_before == 0 && opts_.kv.compresses()) reset();
    throw;
  }
  queries_written(tokens.size());
  if (tokens.size() > 1)
    last_.prefill_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return logits_;
}

void Session::progress(uint64_t done, uint64_t total) {
  if (cancel_requested_.exchange(false)) throw Cancelled();
  if (opts_.on_progress && !opts_.on_progress(done, total)) throw Cancelled();
}

std::span<const float> Session::decode(int32_t token) { return prefill(std::span<const int32_t>(&token, 1)); }

KvStats Session::kv_stats() const {
  KvStats s = last_;
  s.full_bytes = KvCache::full_bytes(model_.config(), cache_.types(), n_past_);
  s.retained_bytes = cache_.held_bytes(n_past_);
  s.allocated_bytes = cache_.allocated_bytes();
  return s;
}

}  // namespace snapvk
