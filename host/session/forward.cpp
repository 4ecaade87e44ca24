// The forward pass. layer() is one transformer block over T rows, one dispatch per line with
// barriers where a dispatch reads what the previous ones wrote. forward() runs T tokens
// through every layer against the session's cache; prefill_compressed() runs a whole prompt
// layer by layer and compacts each layer's cache before the next (SnapKV and family).
#include <cmath>
#include <cstring>
#include <optional>

#include "host/session/session.h"
#include "runtime/vk_check.h"

namespace snapvk {

// The cache a layer attends to: the session's, or a prompt's transient full K/V.
struct Session::KvView {
  const Buffer& k;
  const Buffer& v;
  const Buffer& heads;
  KvWindow w;  // a sliding-window layer's window and ring (row0 is then the position)
  KvTypes types;
  KvCache::KCenter* center;  // a rotated K type's: the layer's keys are stored less it
};

// One sequence's attention inside a layer: its rows of q, k, v and attn, and its cache.
struct Session::SeqAttention {
  BufferRange q, k, v, attn;  // [T] rows each
  BufferRange part;           // attention scratch of its session: decode's partials, prefill passes' state
  KvView kv;
  uint32_t row0 = 0, pos0 = 0;      // row0: the first appended row after each head's base
  uint32_t decode_len = 0;          // the most keys one of its queries sees
  const QuerySink* sink = nullptr;  // where its rotated queries go, if anywhere
};

BufferRange Session::layer(uint32_t l, uint32_t T, BufferRange x, const KvView& kv, uint32_t row0, uint32_t pos0,
                           uint32_t decode_len) {
  const SeqAttention seq{act_.q, act_.k, act_.v, act_.attn,  act_.part,
                         kv,     row0,   pos0,   decode_len, sink_.ring ? &sink_ : nullptr};
  return record_layer(model_, cs_, act_, l, T, x, std::span<const SeqAttention>(&seq, 1));
}

// Rotates each sequence's q and k by its positions, appends its k and v to its cache and runs its
// attention: T rows of one sequence (forward), or one row of each of several (decode_batch).
void Session::record_attention(const Model& m, CommandStream& cs, uint32_t l, uint32_t T,
                               std::span<const SeqAttention> seqs) {
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  const Kernels& k = m.kernels();
  const AttentionKernels& ak = m.attention();
  // sliding-window layers rotate with their own base and no scaling (gemma3)
  const bool swa = c.is_swa(l);
  const BufferRange rope_factors = w.rope_freqs ? w.rope_freqs.buf : w.output_norm.buf;  // unread when absent
  for (const SeqAttention& s : seqs) {
    const RopeParams rope{c.head_dim,
                          c.n_rot,
                          s.pos0,
                          swa ? c.rope_base_swa : c.rope_base,
                          uint32_t(c.rope_type),
                          swa ? 1.0f : c.rope_freq_scale};
    op_rope(cs, k, s.q, rope_factors, bool(w.rope_freqs), T, c.n_head, rope, s.k, c.n_head_kv);
    // a rotated V type stores v rotated (hq4, hq3: shaders/hadamard.comp)
    if (kv_type_rotated(s.kv.types.v)) op_kv_rotate(cs, ak, s.v, T * c.n_head_kv);
  }
  cs.barrier();
  // a rotated K type: q and k by the same orthogonal transform, so q.k is unchanged (the voting
  // and sink queries below are kept rotated, as the cache's keys)
  bool rotated = false;
  for (const SeqAttention& s : seqs)
    if (kv_type_rotated(s.kv.types.k)) {
      op_kv_rotate(cs, ak, s.q, T * c.n_head);
      op_kv_rotate(cs, ak, s.k, T * c.n_head_kv);
      rotated = true;
    }
  if (rotated) cs.barrier();
  // a rotated K type's layer takes its first keys' mean as its centre (shaders/k_center.comp)
  bool centred = false;
  for (const SeqAttention& s : seqs)
    if (s.kv.center && !s.kv.center->set) {
      op_k_center(cs, k, ak, s.k, s.kv.center->c, T, c.n_head_kv);
      s.kv.center->set = centred = true;
    }
  if (centred) cs.barrier();
  // the rotated queries of the last sink->rows positions, for the sink's owner (EndlessChat: the
  // window that votes when the turn ends)
  bool kept = false;
  for (const SeqAttention& s : seqs) {
    if (!s.sink || swa) continue;
    const uint32_t R = s.sink->rows;
    const uint64_t qrow = uint64_t(c.q_dim()) * 4, layer0 = uint64_t(l) * R * qrow;
    for (uint32_t i = T > R ? T - R : 0; i < T; ++i)  // earlier rows would be overwritten
      cs.copy(*s.q.buffer, s.q.offset + i * qrow, *s.sink->ring, layer0 + ((s.pos0 + i) % R) * qrow, qrow);
    kept = true;
  }
  if (kept) cs.barrier();
  // append k, v to the cache after each head's entries (a sliding-window layer: into its ring)
  for (const SeqAttention& s : seqs) {
    const Buffer* center = s.kv.center ? &s.kv.center->c : nullptr;
    if (s.kv.types.k == s.kv.types.v) {  // one dispatch for both
      op_kv_store(cs, k, ak, s.kv.types.k, s.k, s.kv.k, s.kv.heads, T, c.n_head_kv, s.row0, s.kv.w.ring, center, s.v,
                  s.kv.v);
    } else {
      op_kv_store(cs, k, ak, s.kv.types.k, s.k, s.kv.k, s.kv.heads, T, c.n_head_kv, s.row0, s.kv.w.ring, center);
      op_kv_store(cs, k, ak, s.kv.types.v, s.v, s.kv.v, s.kv.heads, T, c.n_head_kv, s.row0, s.kv.w.ring);
    }
  }
  cs.barrier();
  // attn = softmax(q k^T * scale) v over what each query may see (causal, GQA, its window)
  for (const SeqAttention& s : seqs)
    if (T == 1)
      op_attn_decode(cs, k, ak, s.kv.types, s.q, s.kv.k, s.kv.v, s.kv.heads, s.part, s.attn, c.n_head, c.n_head_kv,
                     s.decode_len, s.row0 + 1, c.attention_scale(), s.kv.w);
    else
      op_attn_prefill(cs, k, ak, s.kv.types, s.q, s.kv.k, s.kv.v, s.kv.heads, s.part, s.attn, T, c.n_head, c.n_head_kv, s.row0,
                      s.decode_len, c.attention_scale(), s.kv.w);
  cs.barrier();
  // a rotated V type: the weighted sum of rotated values back to the model's basis
  bool back = false;
  for (const SeqAttention& s : seqs)
    if (kv_type_rotated(s.kv.types.v)) op_kv_rotate(cs, ak, s.attn, T * c.n_head, true), back = true;
  if (back) cs.barrier();
}

BufferRange Session::record_layer(const Model& m, CommandStream& cs, Activations& a, uint32_t l, uint32_t T,
                                  BufferRange x, std::span<const SeqAttention> seqs) {
  const ModelConfig& c = m.config();
  const LayerWeights& L = m.weights().layers[l];
  const Kernels& k = m.kernels();
  // Projection y = W x for each of the T rows: matrix-vector for one token, matrix-matrix for a batch.
  auto project = [&](const DeviceTensor& W, BufferRange in, BufferRange out) {
    if (T == 1)
      op_matvec(cs, k, W.type, W.buf, in, out, W.rows, W.cols);
    else
      op_matmul(cs, k, W.type, W.buf, in, out, T, W.rows, W.cols);
  };
  // One token: the norms, the residual adds and SwiGLU go into the projections (matvec.comp), and
  // q, k, v come from one stacked projection where the weights allow. A fused matvec needs its
  // weights in one binding: larger ones take the separate ops, which split them.
  const bool one = T == 1 && seqs.size() == 1;
  auto fits = [&](std::initializer_list<const DeviceTensor*> ws) {
    for (const DeviceTensor* W : ws)
      if (!matvec_fits(k, W->type, W->rows, W->cols)) return false;
    return true;
  };
  const uint64_t f = 4;
  const bool stacked_qkv = one && L.wqkv && a.qkv1 && fits({&L.wqkv});  // (a session's activations hold qkv1)
  SeqAttention one_seq = seqs[0];
  if (stacked_qkv) {
    one_seq.q = BufferRange(a.qkv1, 0, c.q_dim() * f);
    one_seq.k = BufferRange(a.qkv1, c.q_dim() * f, c.kv_dim() * f);
    one_seq.v = BufferRange(a.qkv1, (c.q_dim() + c.kv_dim()) * f, c.kv_dim() * f);
    seqs = std::span<const SeqAttention>(&one_seq, 1);
  }
  const BufferRange q = seqs.size() == 1 ? seqs[0].q : a.q, kk = seqs.size() == 1 ? seqs[0].k : a.k,
                    v = seqs.size() == 1 ? seqs[0].v : a.v;

  // xn = rmsnorm(x); q, k, v = projections of xn
  if (one && (stacked_qkv || fits({&L.wq, &L.wk, &L.wv}))) {
    const BufferRange norm = L.attn_norm.buf;
    const MatvecFuse fuse{&norm, c.rms_eps};
    if (stacked_qkv) {
      op_matvec(cs, k, L.wqkv.type, L.wqkv.buf, x, a.qkv1, L.wqkv.rows, L.wqkv.cols, fuse);
    } else {
      op_matvec(cs, k, L.wq.type, L.wq.buf, x, q, L.wq.rows, L.wq.cols, fuse);
      op_matvec(cs, k, L.wk.type, L.wk.buf, x, kk, L.wk.rows, L.wk.cols, fuse);
      op_matvec(cs, k, L.wv.type, L.wv.buf, x, v, L.wv.rows, L.wv.cols, fuse);
    }
  } else {
    op_rms_norm(cs, k, x, L.attn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
    cs.barrier();
    project(L.wq, a.xn, q);
    project(L.wk, a.xn, kk);
    project(L.wv, a.xn, v);
  }
  cs.barrier();
  if (c.qkv_bias) {
    op_add(cs, k, q, L.bq.buf, q, T * c.q_dim(), c.q_dim());
    op_add(cs, k, kk, L.bk.buf, kk, T * c.kv_dim(), c.kv_dim());
    op_add(cs, k, v, L.bv.buf, v, T * c.kv_dim(), c.kv_dim());
    cs.barrier();
  }
  if (c.qk_norm) {
    // q, k = rmsnorm of each head, in place (rows of head_dim, one weight vector for all heads)
    op_rms_norm(cs, k, q, L.q_norm.buf, q, T * c.n_head, c.head_dim, c.rms_eps);
    op_rms_norm(cs, k, kk, L.k_norm.buf, kk, T * c.n_head_kv, c.head_dim, c.rms_eps);
    cs.barrier();
  }
  // one sequence of T rows, or T sequences of one row each
  record_attention(m, cs, l, seqs.size() == 1 ? T : 1, seqs);
  // x = x + W in (gemma3: + rmsnorm(W in)); one token adds in the projection
  auto add_projection = [&](const DeviceTensor& W, BufferRange in, const DeviceTensor& post_norm) {
    if (one && !c.post_norms && fits({&W})) {
      op_matvec(cs, k, W.type, W.buf, in, x, W.rows, W.cols, MatvecFuse{.add = true});
    } else {
      project(W, in, a.xn);
      cs.barrier();
      if (c.post_norms) {
        op_rms_norm(cs, k, a.xn, post_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
        cs.barrier();
      }
      op_add(cs, k, x, a.xn, x, T * c.n_embd, T * c.n_embd);
    }
    cs.barrier();
  };
  // x = x + wo attn
  add_projection(L.wo, a.attn, L.post_attn_norm);
  // x = x + w_down (act(w_gate xn) * w_up xn), xn = rmsnorm(x), act silu (gemma3: gelu)
  const Glu glu = c.gelu_ffn ? Glu::Gelu : Glu::Silu;
  if (one && L.w_gate_up && fits({&L.w_gate_up}) && k.tuning.matvec_rows % 2 == 0) {
    const BufferRange norm = L.ffn_norm.buf;
    op_matvec(cs, k, L.w_gate_up.type, L.w_gate_up.buf, x, a.gate, c.n_ff, L.w_gate_up.cols,
              MatvecFuse{&norm, c.rms_eps, false, glu});
    cs.barrier();
  } else {
    if (one && fits({&L.w_gate, &L.w_up})) {
      const BufferRange norm = L.ffn_norm.buf;
      const MatvecFuse fuse{&norm, c.rms_eps};
      op_matvec(cs, k, L.w_gate.type, L.w_gate.buf, x, a.gate, L.w_gate.rows, L.w_gate.cols, fuse);
      op_matvec(cs, k, L.w_up.type, L.w_up.buf, x, a.up, L.w_up.rows, L.w_up.cols, fuse);
    } else {
      op_rms_norm(cs, k, x, L.ffn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
      cs.barrier();
      project(L.w_gate, a.xn, a.gate);
      project(L.w_up, a.xn, a.up);
    }
    cs.barrier();
    if (glu == Glu::Gelu)
      op_geglu(cs, k, a.gate, a.up, a.gate, T * c.n_ff);
    else
      op_swiglu(cs, k, a.gate, a.up, a.gate, T * c.n_ff);
    cs.barrier();
  }
  add_projection(L.w_down, a.gate, L.post_ffn_norm);
  return q;
}

void Session::embed(BufferRange x, uint32_t T) {
  const ModelWeights& w = model_.weights();
  const uint32_t n_embd = model_.config().n_embd;
  // x = token embeddings of act_.ids (gemma3: times sqrt(n_embd))
  op_get_rows(cs_, model_.kernels(), w.tok_embd.type, w.tok_embd.buf, act_.ids, x, T, n_embd);
  cs_.barrier();
  if (w.embd_scale) {
    op_mul(cs_, model_.kernels(), x, w.embd_scale.buf, x, T * n_embd, 1);
    cs_.barrier();
  }
}

void Session::logits_of_row(BufferRange x_row) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  const uint64_t row = uint64_t(c.n_embd) * 4;
  // logits = lm_head rmsnorm(x): one dispatch where the head fits one binding
  const DeviceTensor& head = w.lm_head();
  if (matvec_fits(model_.kernels(), head.type, head.rows, head.cols)) {
    const BufferRange norm = w.output_norm.buf;
    op_matvec(cs_, model_.kernels(), head.type, head.buf, x_row, act_.logits, head.rows, head.cols,
              MatvecFuse{&norm, c.rms_eps});
  } else {
    op_rms_norm(cs_, model_.kernels(), x_row, w.output_norm.buf, BufferRange(act_.xn, 0, row), 1, c.n_embd, c.rms_eps);
    cs_.barrier();
    op_matvec(cs_, model_.kernels(), head.type, head.buf, BufferRange(act_.xn, 0, row), act_.logits, head.rows,
              head.cols);
  }
  if (c.logit_softcap > 0) {
    // logits = cap * tanh(logits / cap)
    cs_.barrier();
    op_softcap(cs_, model_.kernels(), act_.logits, c.n_vocab, c.logit_softcap);
  }
}

// rows[i] = lm_head rmsnorm(x[i]) for every row of the batch
void Session::logits_of_rows(uint32_t T) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  op_rms_norm(cs_, model_.kernels(), act_.x, w.output_norm.buf, act_.xn, T, c.n_embd, c.rms_eps);
  cs_.barrier();
  const DeviceTensor& head = w.lm_head();
  if (T == 1)
    op_matvec(cs_, model_.kernels(), head.type, head.buf, act_.xn, act_.rows, head.rows, head.cols);
  else
    op_matmul(cs_, model_.kernels(), head.type, head.buf, act_.xn, act_.rows, T, head.rows, head.cols);
  if (c.logit_softcap > 0) {
    cs_.barrier();
    op_softcap(cs_, model_.kernels(), act_.rows, uint64_t(T) * c.n_vocab, c.logit_softcap);
  }
}

void Session::forward(const int32_t* tokens, uint32_t T, bool want_logits, const RowLogitsFn* rows) {
  const ModelConfig& c = model_.config();
  const uint32_t appended = n_past_ - cache_.compacted_len();  // rows used after each head's retained ones
  std::memcpy(act_.ids.mapped(), tokens, T * sizeof(int32_t));
  cs_.begin();
  embed(act_.x, T);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const KvLayer& L = cache_.layer(l);
    if (L.window)  // a ring: rows by position, the query sees at most the window
      layer(l, T, act_.x, KvView{L.k, L.v, L.heads, L.kv_window(), cache_.types(), cache_.center(l)}, n_past_, n_past_,
            std::min(n_past_ + T, L.window));
    else
      layer(l, T, act_.x, KvView{L.k, L.v, L.heads, {}, cache_.types(), cache_.center(l)}, appended, n_past_,
            cache_.max_len(appended + T));
  }
  const uint64_t row = uint64_t(c.n_embd) * 4;
  if (rows)
    logits_of_rows(T);
  else if (want_logits)
    logits_of_row(BufferRange(act_.x, (T - 1) * row, row));  // only the prompt's last batch needs them
  cs_.submit();
  n_past_ += T;
  if (want_logits && !rows) act_.logits.download(logits_.data(), logits_.size() * 4);
  if (rows) {
    const float* all = static_cast<const float*>(act_.rows.mapped());
    for (uint32_t i = 0; i < T; ++i) (*rows)(i, std::span<const float>(all + uint64_t(i) * c.n_vocab, c.n_vocab));
    std::memcpy(logits_.data(), all + uint64_t(T - 1) * c.n_vocab, logits_.size() * 4);
  }
}

void Session::prefill_compressed(std::span<const int32_t> tokens) {
  const ModelConfig& c = model_.config();
  Context& ctx = model_.ctx();
  const uint32_t L = uint32_t(tokens.size()), n_kv = c.n_head_kv;
  const KvPolicyOptions& pol = opts_.kv;
  pol.check_prompt(L);
  const uint32_t n_q = pol.voting_queries(L);
  const KvTypes types = cache_.types();
  const uint64_t xrow = uint64_t(c.n_embd) * 4;

  // Transient, for this prompt only: hidden states of every prompt token, one layer's full
  // K/V, and the voting queries of the current layer.
  Buffer X(ctx, L * xrow, BufferKind::Device, "prompt_x");
  Buffer full_k(ctx, uint64_t(n_kv) * L * kv_row_bytes(types.k, c.head_dim), BufferKind::Device, "layer_k_full");
  Buffer full_v(ctx, uint64_t(n_kv) * L * kv_row_bytes(types.v, c.head_dim), BufferKind::Device, "layer_v_full");
  Buffer full_heads(ctx, 2ull * n_kv * 4, BufferKind::Device, "layer_heads_full");
  Buffer q_win(ctx, uint64_t(n_q) * c.q_dim() * 4, BufferKind::Device, "q_window");
  const std::vector<uint32_t> full_table = KvCache::uniform_table(n_kv, L, 0);
  full_heads.upload(full_table.data(), full_table.size() * 4);
  // the word of each token, numbered, for word completion
  std::optional<Buffer> words;
  if (pol.completes_words()) {
    const std::vector<uint32_t> numbers = word_numbers(model_.tokenizer().word_continuations(tokens));
    words.emplace(ctx, uint64_t(L) * 4, BufferKind::Device, "prompt_words");
    words->upload(numbers.data(), numbers.size() * 4);
  }
  cache_.begin_prompt(L, opts_.keep_selection);
  cs_compress_.reset_timings();

  // X = token embeddings, a batch at a time
  for (uint32_t r0 = 0; r0 < L; r0 += opts_.n_batch) {
    const uint32_t T = std::min(opts_.n_batch, L - r0);
    std::memcpy(act_.ids.mapped(), tokens.data() + r0, T * sizeof(int32_t));
    cs_.begin();
    embed(BufferRange(X, r0 * xrow, T * xrow), T);
    cs_.submit();
  }
  const uint64_t total = uint64_t(L) * c.n_layer;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    progress(uint64_t(l) * L, total);
    if (c.is_swa(l)) {  // a sliding-window layer is not compacted: the prompt goes through its ring
      const KvLayer& R = cache_.layer(l);
      cs_.begin();
      for (uint32_t r0 = 0; r0 < L; r0 += opts_.n_batch)
        layer(l, std::min(opts_.n_batch, L - r0), BufferRange(X, r0 * xrow, std::min(opts_.n_batch, L - r0) * xrow),
              KvView{R.k, R.v, R.heads, R.kv_window(), cache_.types(), cache_.center(l)}, r0, r0,
              std::min(r0 + std::min(opts_.n_batch, L - r0), R.window));
      cs_.submit();
      continue;
    }
    // all prompt tokens through layer l, a batch at a time, into the transient full K/V
    cs_.begin();
    for (uint32_t r0 = 0; r0 < L; r0 += opts_.n_batch) {
      const uint32_t T = std::min(opts_.n_batch, L - r0);
      const BufferRange q = layer(l, T, BufferRange(X, r0 * xrow, T * xrow),
                                  KvView{full_k, full_v, full_heads, {}, cache_.types(), cache_.center(l)}, r0, r0, r0 + T);
      // keep the voting queries (rotated) of rows L - n_q .. L - 1 for the score pass
      const uint32_t first = std::max(r0, L - n_q);
      if (first < r0 + T) {
        const uint64_t qrow = uint64_t(c.q_dim()) * 4;
        cs_.copy(*q.buffer, q.offset + (first - r0) * qrow, q_win, (first - (L - n_q)) * qrow, (r0 + T - first) * qrow);
        cs_.barrier();
      }
    }
    cs_.submit();
    // keep what the policy selects, in the session's compacted cache
    cache_.compact_layer(cs_compress_, l, PromptLayer{full_k, full_v, full_heads, q_win, L, n_q, words ? &*words : nullptr}, pol);
  }
  progress(total, total);
  const CompressTimes t = compress_times(cs_compress_);
  last_.score_ms = t.score_ms, last_.pool_ms = t.pool_ms, last_.select_ms = t.select_ms, last_.gather_ms = t.gather_ms;
  // logits of the last prompt token
  cs_.begin();
  logits_of_row(BufferRange(X, (L - 1) * xrow, xrow));
  cs_.submit();
  n_past_ = L;
  act_.logits.download(logits_.data(), logits_.size() * 4);
}

}  // namespace snapvk

namespace snapvk {

DecodeBatch::DecodeBatch(const Model& m, uint32_t max_seqs_) : max_seqs(max_seqs_), cs(m.ctx()) {
  const ModelConfig& c = m.config();
  Context& ctx = m.ctx();
  if (max_seqs == 0) throw Error(ErrorKind::InvalidArgument, "a decode batch needs room for at least one sequence");
  const uint64_t B = max_seqs, f = 4;
  allocate_rows(act, ctx, c, B, "batch_");
  act.logits = Buffer(ctx, B * c.n_vocab * f, BufferKind::Staging, "batch_logits");
}

uint64_t DecodeBatch::bytes(const ModelConfig& c, uint32_t max_seqs) {
  const uint64_t per_row = 2ull * c.n_embd + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.n_ff + 1 + c.n_vocab;
  return 4 * uint64_t(max_seqs) * per_row;
}

bool DecodeBatch::fits(const Model& m) {
  // Each sequence's rows are bound at their own offset: those must meet the device's alignment.
  const ModelConfig& c = m.config();
  const uint64_t align = std::max<uint64_t>(1, m.ctx().info().min_storage_buffer_offset_alignment);
  for (uint64_t row : {uint64_t(c.q_dim()) * 4, uint64_t(c.kv_dim()) * 4})
    if (row % align) return false;
  return true;
}

void Session::decode_batch(DecodeBatch& b, std::span<Session* const> ss, std::span<const int32_t> tokens) {
  if (ss.empty() || ss.size() != tokens.size() || ss.size() > b.max_seqs)
    throw Error(ErrorKind::InvalidArgument, "decode_batch: " + std::to_string(ss.size()) + " sessions for " +
                                                std::to_string(tokens.size()) + " tokens, room for " +
                                                std::to_string(b.max_seqs));
  if (ss.size() == 1) {  // one sequence: the session's own matrix-vector pass
    ss[0]->decode(tokens[0]);
    return;
  }
  const Model& m = ss[0]->model_;
  const ModelConfig& c = m.config();
  const uint32_t N = uint32_t(ss.size());
  for (uint32_t i = 0; i < N; ++i) {
    Session& s = *ss[i];
    if (&s.model_ != &m) throw Error(ErrorKind::InvalidArgument, "decode_batch: the sessions' models differ");
    if (s.n_past_ == 0 || s.n_past_ >= s.opts_.n_ctx)
      throw Error(ErrorKind::InvalidArgument, "decode_batch: a session has no prompt or no room left", opt::n_ctx);
    if (tokens[i] < 0 || uint32_t(tokens[i]) >= c.n_vocab)
      throw Error(ErrorKind::InvalidArgument, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
  }
  Activations& a = b.act;
  CommandStream& cs = b.cs;
  std::memcpy(a.ids.mapped(), tokens.data(), N * sizeof(int32_t));
  cs.begin();
  const ModelWeights& w = m.weights();
  op_get_rows(cs, m.kernels(), w.tok_embd.type, w.tok_embd.buf, a.ids, a.x, N, c.n_embd);
  cs.barrier();
  if (w.embd_scale) {
    op_mul(cs, m.kernels(), a.x, w.embd_scale.buf, a.x, N * c.n_embd, 1);
    cs.barrier();
  }
  const uint64_t qrow = uint64_t(c.q_dim()) * 4, kvrow = uint64_t(c.kv_dim()) * 4;
  std::vector<SeqAttention> seqs;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    seqs.clear();
    for (uint32_t i = 0; i < N; ++i) {
      Session& s = *ss[i];
      const KvLayer& L = s.cache_.layer(l);
      const uint32_t appended = s.n_past_ - s.cache_.compacted_len();
      // as forward(): a ring is addressed by position, a compacted or full layer after its retained rows
      const KvView kv{L.k, L.v, L.heads, L.window ? L.kv_window() : KvWindow{}, s.cache_.types(), s.cache_.center(l)};
      seqs.push_back({BufferRange(a.q, i * qrow, qrow), BufferRange(a.k, i * kvrow, kvrow),
                      BufferRange(a.v, i * kvrow, kvrow), BufferRange(a.attn, i * qrow, qrow), s.act_.part, kv,
                      L.window ? s.n_past_ : appended, s.n_past_,
                      L.window ? std::min(s.n_past_ + 1, L.window) : s.cache_.max_len(appended + 1),
                      s.sink_.ring ? &s.sink_ : nullptr});
    }
    record_layer(m, cs, a, l, N, a.x, seqs);
  }
  // logits of every row = lm_head rmsnorm(x)
  op_rms_norm(cs, m.kernels(), a.x, w.output_norm.buf, a.xn, N, c.n_embd, c.rms_eps);
  cs.barrier();
  const DeviceTensor& head = w.lm_head();
  op_matmul(cs, m.kernels(), head.type, head.buf, a.xn, a.logits, N, head.rows, head.cols);
  if (c.logit_softcap > 0) {
    cs.barrier();
    op_softcap(cs, m.kernels(), a.logits, uint64_t(N) * c.n_vocab, c.logit_softcap);
  }
  cs.submit();
  for (uint32_t i = 0; i < N; ++i) {
    Session& s = *ss[i];
    ++s.n_past_;
    s.queries_written(1);
    a.logits.download(s.logits_.data(), uint64_t(c.n_vocab) * 4, uint64_t(i) * c.n_vocab * 4);
  }
}

}  // namespace snapvk
