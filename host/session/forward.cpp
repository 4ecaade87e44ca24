// The forward pass. layer() is one transformer block over T rows, one dispatch per line with
// barriers where a dispatch reads what the previous ones wrote. forward() runs T tokens
// through every layer against the session's cache; prefill_compressed() runs a whole prompt
// layer by layer and compacts each layer's cache before the next (SnapKV and family).
#include <cmath>
#include <cstring>

#include "host/session/session.h"
#include "runtime/vk_check.h"

namespace snapvk {

// The cache a layer attends to: the session's, or a prompt's transient full K/V.
struct Session::KvView {
  const Buffer& k;
  const Buffer& v;
  const Buffer& heads;
  KvWindow w;  // a sliding-window layer's window and ring (slot0 is then the position)
};

void Session::layer(uint32_t l, uint32_t T, BufferRange x, const KvView& kv, uint32_t slot0, uint32_t pos0,
                    uint32_t decode_len) {
  const ModelConfig& c = model_.config();
  const LayerWeights& L = model_.weights().layers[l];
  const ModelWeights& w = model_.weights();
  const Kernels& k = model_.kernels();
  const AttentionKernels& ak = model_.attention();
  const KvType kt = cache_.type();
  const float scale = c.attention_scale();
  // sliding-window layers rotate with their own base and no scaling (gemma3)
  const bool swa = c.is_swa(l);
  const RopeParams rope{c.head_dim,
                        c.n_rot,
                        pos0,
                        swa ? c.rope_base_swa : c.rope_base,
                        uint32_t(c.rope_type),
                        swa ? 1.0f : c.rope_freq_scale};
  const Buffer& rope_factors = w.rope_freqs ? w.rope_freqs.buf : w.output_norm.buf;  // unread when absent
  CommandStream& cs = cs_;
  Activations& a = act_;
  // Projection y = W x for each of the T rows: matrix-vector for one token, matrix-matrix for a batch.
  auto project = [&](const DeviceTensor& W, BufferRange in, BufferRange out) {
    if (T == 1)
      op_matvec(cs, k, W.type, W.buf, in, out, W.rows, W.cols);
    else
      op_matmul(cs, k, W.type, W.buf, in, out, T, W.rows, W.cols);
  };

  // xn = rmsnorm(x); q, k, v = projections of xn
  op_rms_norm(cs, k, x, L.attn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
  cs.barrier();
  project(L.wq, a.xn, a.q);
  project(L.wk, a.xn, a.k);
  project(L.wv, a.xn, a.v);
  cs.barrier();
  if (c.qkv_bias) {
    op_add(cs, k, a.q, L.bq.buf, a.q, T * c.q_dim(), c.q_dim());
    op_add(cs, k, a.k, L.bk.buf, a.k, T * c.kv_dim(), c.kv_dim());
    op_add(cs, k, a.v, L.bv.buf, a.v, T * c.kv_dim(), c.kv_dim());
    cs.barrier();
  }
  if (c.qk_norm) {
    // q, k = rmsnorm of each head, in place (rows of head_dim, one weight vector for all heads)
    op_rms_norm(cs, k, a.q, L.q_norm.buf, a.q, T * c.n_head, c.head_dim, c.rms_eps);
    op_rms_norm(cs, k, a.k, L.k_norm.buf, a.k, T * c.n_head_kv, c.head_dim, c.rms_eps);
    cs.barrier();
  }
  // rotate q and k by position
  op_rope(cs, k, a.q, rope_factors, bool(w.rope_freqs), T, c.n_head, rope);
  op_rope(cs, k, a.k, rope_factors, bool(w.rope_freqs), T, c.n_head_kv, rope);
  cs.barrier();
  if (opts_.endless && !swa) {  // the window that votes when the turn ends
    keep_queries(l, T, pos0);
    cs.barrier();
  }
  // append k, v to the cache after each head's entries (a sliding-window layer: into its ring)
  op_kv_store(cs, k, ak, kt, a.k, kv.k, kv.heads, T, c.n_head_kv, slot0, kv.w.ring);
  op_kv_store(cs, k, ak, kt, a.v, kv.v, kv.heads, T, c.n_head_kv, slot0, kv.w.ring);
  cs.barrier();
  // attn = softmax(q k^T * scale) v over what each query may see (causal, GQA, its window)
  if (T == 1)
    op_attn_decode(cs, k, ak, kt, a.q, kv.k, kv.v, kv.heads, a.part, a.attn, c.n_head, c.n_head_kv, decode_len,
                   slot0 + 1, scale, kv.w);
  else
    op_attn_prefill(cs, k, ak, kt, a.q, kv.k, kv.v, kv.heads, a.attn, T, c.n_head, c.n_head_kv, slot0, scale, kv.w);
  cs.barrier();
  // x = x + wo attn (gemma3: + rmsnorm(wo attn))
  project(L.wo, a.attn, a.xn);
  cs.barrier();
  if (c.post_norms) {
    op_rms_norm(cs, k, a.xn, L.post_attn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
    cs.barrier();
  }
  op_add(cs, k, x, a.xn, x, T * c.n_embd, T * c.n_embd);
  cs.barrier();
  // x = x + w_down (act(w_gate xn) * w_up xn), xn = rmsnorm(x), act silu (gemma3: gelu, and the sum post-normed)
  op_rms_norm(cs, k, x, L.ffn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
  cs.barrier();
  project(L.w_gate, a.xn, a.gate);
  project(L.w_up, a.xn, a.up);
  cs.barrier();
  if (c.gelu_ffn)
    op_geglu(cs, k, a.gate, a.up, a.gate, T * c.n_ff);
  else
    op_swiglu(cs, k, a.gate, a.up, a.gate, T * c.n_ff);
  cs.barrier();
  project(L.w_down, a.gate, a.xn);
  cs.barrier();
  if (c.post_norms) {
    op_rms_norm(cs, k, a.xn, L.post_ffn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
    cs.barrier();
  }
  op_add(cs, k, x, a.xn, x, T * c.n_embd, T * c.n_embd);
  cs.barrier();
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
  // logits = lm_head rmsnorm(x)
  op_rms_norm(cs_, model_.kernels(), x_row, w.output_norm.buf, BufferRange(act_.xn, 0, row), 1, c.n_embd, c.rms_eps);
  cs_.barrier();
  const DeviceTensor& head = w.lm_head();
  op_matvec(cs_, model_.kernels(), head.type, head.buf, BufferRange(act_.xn, 0, row), act_.logits, head.rows,
            head.cols);
  if (c.logit_softcap > 0) {
    // logits = cap * tanh(logits / cap)
    cs_.barrier();
    op_softcap(cs_, model_.kernels(), act_.logits, c.n_vocab, c.logit_softcap);
  }
}

void Session::forward(const int32_t* tokens, uint32_t T, bool want_logits) {
  const ModelConfig& c = model_.config();
  const uint32_t appended = n_past_ - cache_.prompt_len();  // slots used after each head's retained entries
  std::memcpy(act_.ids.mapped(), tokens, T * sizeof(int32_t));
  cs_.begin();
  embed(act_.x, T);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const KvLayer& L = cache_.layer(l);
    if (L.window)  // a ring: slots by position, the query sees at most the window
      layer(l, T, act_.x, KvView{L.k, L.v, L.heads, L.kv_window()}, n_past_, n_past_, std::min(n_past_ + T, L.window));
    else
      layer(l, T, act_.x, KvView{L.k, L.v, L.heads, {}}, appended, n_past_, cache_.max_len(appended + T));
  }
  const uint64_t row = uint64_t(c.n_embd) * 4;
  if (want_logits) logits_of_row(BufferRange(act_.x, (T - 1) * row, row));  // only the prompt's last batch needs them
  cs_.submit();
  n_past_ += T;
  if (want_logits) act_.logits.download(logits_.data(), logits_.size() * 4);
}

void Session::prefill_compressed(std::span<const int32_t> tokens) {
  const ModelConfig& c = model_.config();
  Context& ctx = model_.ctx();
  const uint32_t L = uint32_t(tokens.size()), n_kv = c.n_head_kv;
  const KvPolicyOptions& pol = opts_.kv;
  pol.check_prompt(L);
  const uint32_t n_q = pol.voting_queries(L);
  const uint64_t row = kv_row_bytes(cache_.type(), c.head_dim), xrow = uint64_t(c.n_embd) * 4;

  // Transient, for this prompt only: hidden states of every prompt token, one layer's full
  // K/V, and the voting queries of the current layer.
  Buffer X(ctx, L * xrow, BufferKind::Device, "prompt_x");
  Buffer full_k(ctx, uint64_t(n_kv) * L * row, BufferKind::Device, "layer_k_full");
  Buffer full_v(ctx, uint64_t(n_kv) * L * row, BufferKind::Device, "layer_v_full");
  Buffer full_heads(ctx, 2ull * n_kv * 4, BufferKind::Device, "layer_heads_full");
  Buffer q_win(ctx, uint64_t(n_q) * c.q_dim() * 4, BufferKind::Device, "q_window");
  const std::vector<uint32_t> full_table = KvCache::uniform_table(n_kv, L, 0);
  full_heads.upload(full_table.data(), full_table.size() * 4);
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
              KvView{R.k, R.v, R.heads, R.kv_window()}, r0, r0, 0);
      cs_.submit();
      continue;
    }
    // all prompt tokens through layer l, a batch at a time, into the transient full K/V
    cs_.begin();
    for (uint32_t r0 = 0; r0 < L; r0 += opts_.n_batch) {
      const uint32_t T = std::min(opts_.n_batch, L - r0);
      layer(l, T, BufferRange(X, r0 * xrow, T * xrow), KvView{full_k, full_v, full_heads, {}}, r0, r0, 0);
      // keep the voting queries (rotated) of rows L - n_q .. L - 1 for the score pass
      const uint32_t first = std::max(r0, L - n_q);
      if (first < r0 + T) {
        const uint64_t qrow = uint64_t(c.q_dim()) * 4;
        cs_.copy(act_.q, (first - r0) * qrow, q_win, (first - (L - n_q)) * qrow, (r0 + T - first) * qrow);
        cs_.barrier();
      }
    }
    cs_.submit();
    // keep what the policy selects, in the session's compacted cache
    cache_.compact_layer(cs_compress_, l, PromptLayer{full_k, full_v, full_heads, q_win, L, n_q}, pol);
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
