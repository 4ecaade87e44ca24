// The forward pass: T tokens at positions n_past .. n_past+T-1 through every layer, then the
// logits of the last one. One dispatch per line; barriers where a dispatch reads what the
// previous ones wrote.
#include <cmath>
#include <cstring>

#include "host/session.h"

namespace snapvk {

void Session::forward(const int32_t* tokens, uint32_t T) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  const Kernels& k = model_.kernels();
  const AttentionKernels& ak = model_.attention();
  const KvType kt = cache_.type;
  const uint32_t pos0 = n_past_;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  const RopeParams rope{c.head_dim, c.n_rot, pos0, c.rope_base, uint32_t(c.rope_type)};
  const Buffer& rope_factors = w.rope_freqs ? w.rope_freqs.buf : w.output_norm.buf;  // unread when absent
  CommandStream& cs = cs_;
  Activations& a = act_;

  // Projection y = W x for each of the T rows: matrix-vector for one token, matrix-matrix for a batch.
  auto project = [&](const DeviceTensor& W, const Buffer& x, const Buffer& y) {
    if (T == 1) op_matvec(cs, k, W.type, W.buf, x, y, W.rows, W.cols);
    else op_matmul(cs, k, W.type, W.buf, x, y, T, W.rows, W.cols);
  };

  std::memcpy(a.ids.mapped(), tokens, T * sizeof(int32_t));
  cs.begin();
  // x = token embeddings
  op_get_rows(cs, k, w.tok_embd.type, w.tok_embd.buf, a.ids, a.x, T, c.n_embd);
  cs.barrier();
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = w.layers[l];
    // attention block: xn = rmsnorm(x); q, k, v = projections
    op_rms_norm(cs, k, a.x, L.attn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
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
    // rotate q and k by position
    op_rope(cs, k, a.q, rope_factors, bool(w.rope_freqs), T, c.n_head, rope);
    op_rope(cs, k, a.k, rope_factors, bool(w.rope_freqs), T, c.n_head_kv, rope);
    cs.barrier();
    // append k, v to the layer's cache
    op_kv_store(cs, k, ak, kt, a.k, cache_.k[l], cache_.base, T, c.n_head_kv, cache_.cap, pos0);
    op_kv_store(cs, k, ak, kt, a.v, cache_.v[l], cache_.base, T, c.n_head_kv, cache_.cap, pos0);
    cs.barrier();
    // attn = softmax(q k^T / sqrt(d)) v over positions 0 .. pos (causal, GQA)
    if (T == 1)
      op_attn_decode(cs, k, ak, kt, a.q, cache_.k[l], cache_.v[l], cache_.base, a.part, a.attn, c.n_head,
                     c.n_head_kv, cache_.cap, pos0 + 1, pos0 + 1, scale);
    else
      op_attn_prefill(cs, k, ak, kt, a.q, cache_.k[l], cache_.v[l], a.attn, T, c.n_head, c.n_head_kv, cache_.cap,
                      pos0, scale);
    cs.barrier();
    // x = x + wo attn
    project(L.wo, a.attn, a.xn);
    cs.barrier();
    op_add(cs, k, a.x, a.xn, a.x, T * c.n_embd, T * c.n_embd);
    cs.barrier();
    // feed-forward block: x = x + w_down (silu(w_gate xn) * w_up xn), xn = rmsnorm(x)
    op_rms_norm(cs, k, a.x, L.ffn_norm.buf, a.xn, T, c.n_embd, c.rms_eps);
    cs.barrier();
    project(L.w_gate, a.xn, a.gate);
    project(L.w_up, a.xn, a.up);
    cs.barrier();
    op_swiglu(cs, k, a.gate, a.up, a.gate, T * c.n_ff);
    cs.barrier();
    project(L.w_down, a.gate, a.xn);
    cs.barrier();
    op_add(cs, k, a.x, a.xn, a.x, T * c.n_embd, T * c.n_embd);
    cs.barrier();
  }
  // logits of the last token = lm_head rmsnorm(x[T-1])
  const uint64_t row = uint64_t(c.n_embd) * 4;
  op_rms_norm(cs, k, BufferRange(a.x, (T - 1) * row, row), w.output_norm.buf, BufferRange(a.xn, 0, row), 1, c.n_embd,
              c.rms_eps);
  cs.barrier();
  const DeviceTensor& head = w.lm_head();
  op_matvec(cs, k, head.type, head.buf, BufferRange(a.xn, 0, row), a.logits, head.rows, head.cols);
  cs.submit();
  n_past_ += T;
  a.logits.download(logits_.data(), logits_.size() * 4);
}

}  // namespace snapvk
