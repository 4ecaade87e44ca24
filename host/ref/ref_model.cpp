#include "host/ref/ref_model.h"

#include <cmath>

#include "host/gguf/quant.h"
#include "host/ref/reference.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

std::vector<float> dequant(const GgufFile& f, const std::string& name) {
  const GgufTensor* t = f.find_tensor(name);
  if (!t) throw Error(ErrorKind::BadModel, "reference model: tensor '" + name + "' missing");
  std::vector<float> out(t->n_elements());
  dequantize_row(t->type, t->data, out.data(), int64_t(out.size()));
  return out;
}

void rmsnorm(float* o, const float* x, const float* w, uint32_t n, float eps) {
  double ss = 0;
  for (uint32_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float s = float(1.0 / std::sqrt(ss / n + eps));
  for (uint32_t i = 0; i < n; ++i) o[i] = x[i] * s * w[i];
}

// o[rows] = W[rows, cols] x[cols]
void matvec(float* o, const std::vector<float>& W, const float* x, uint32_t rows, uint32_t cols) {
  for (uint32_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (uint32_t i = 0; i < cols; ++i) acc += double(W[size_t(r) * cols + i]) * x[i];
    o[r] = float(acc);
  }
}

// base and freq_scale: the layer's (gemma3's sliding-window layers have their own).
void rope(float* v, uint32_t n_heads, const ModelConfig& c, uint32_t pos, const std::vector<float>& factors, float base,
          float freq_scale) {
  for (uint32_t h = 0; h < n_heads; ++h) {
    float* x = v + size_t(h) * c.head_dim;
    for (uint32_t i = 0; i < c.n_rot / 2; ++i) {
      double theta = pos * double(freq_scale) * std::pow(double(base), -2.0 * i / c.n_rot);
      if (!factors.empty()) theta /= factors[i];
      const uint32_t a = c.rope_type == RopeType::Neox ? i : 2 * i;
      const uint32_t b = c.rope_type == RopeType::Neox ? i + c.n_rot / 2 : 2 * i + 1;
      const float x0 = x[a], x1 = x[b];
      x[a] = float(x0 * std::cos(theta) - x1 * std::sin(theta));
      x[b] = float(x0 * std::sin(theta) + x1 * std::cos(theta));
    }
  }
}

}  // namespace

RefModel::RefModel(const GgufFile& f, const ModelConfig& cfg, uint32_t n_ctx, bool kv_f16)
    : c_(cfg), n_ctx_(n_ctx), kv_f16_(kv_f16) {
  tok_embd_ = dequant(f, "token_embd.weight");
  output_norm_ = dequant(f, "output_norm.weight");
  output_ = f.find_tensor("output.weight") ? dequant(f, "output.weight") : tok_embd_;
  if (cfg.rope_factors) rope_freqs_ = dequant(f, "rope_freqs.weight");
  for (uint32_t l = 0; l < cfg.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Layer L;
    L.attn_norm = dequant(f, p + "attn_norm.weight");
    L.wq = dequant(f, p + "attn_q.weight");
    L.wk = dequant(f, p + "attn_k.weight");
    L.wv = dequant(f, p + "attn_v.weight");
    if (cfg.qkv_bias) {
      L.bq = dequant(f, p + "attn_q.bias");
      L.bk = dequant(f, p + "attn_k.bias");
      L.bv = dequant(f, p + "attn_v.bias");
    }
    if (cfg.qk_norm) {
      L.q_norm = dequant(f, p + "attn_q_norm.weight");
      L.k_norm = dequant(f, p + "attn_k_norm.weight");
    }
    L.wo = dequant(f, p + "attn_output.weight");
    L.ffn_norm = dequant(f, p + "ffn_norm.weight");
    L.w_gate = dequant(f, p + "ffn_gate.weight");
    L.w_up = dequant(f, p + "ffn_up.weight");
    L.w_down = dequant(f, p + "ffn_down.weight");
    if (cfg.post_norms) {
      L.post_attn_norm = dequant(f, p + "post_attention_norm.weight");
      L.post_ffn_norm = dequant(f, p + "post_ffw_norm.weight");
    }
    layers_.push_back(std::move(L));
  }
  kc_.assign(cfg.n_layer, {});
  vc_.assign(cfg.n_layer, {});
  att_.assign(cfg.n_layer, {});
  qh_.assign(cfg.n_layer, {});
}

void RefModel::restrict_prompt(uint32_t L, std::vector<std::vector<std::vector<uint32_t>>> keep) {
  if (keep.size() != c_.n_layer)
    throw Error(ErrorKind::InvalidArgument, "reference model: restriction needs one entry per layer");
  restrict_len_ = L;
  visible_.assign(c_.n_layer, std::vector<std::vector<bool>>(c_.n_head_kv, std::vector<bool>(L, false)));
  for (uint32_t l = 0; l < c_.n_layer; ++l)
    for (uint32_t h = 0; h < c_.n_head_kv; ++h)
      for (uint32_t p : keep[l].at(h))
        if (p < L) visible_[l][h][p] = true;
}

// Attention of layer l's query q (position pos_, K/V already appended) into out [q_dim]; records
// the probabilities in att_[l].
void RefModel::attention(uint32_t l, const std::vector<float>& q, std::vector<float>& out) {
  const uint32_t HD = c_.head_dim, n = pos_ + 1;
  const bool swa = c_.is_swa(l);
  att_[l].assign(size_t(c_.n_head) * n, 0.0f);
  for (uint32_t h = 0; h < c_.n_head; ++h) {
    const uint32_t kvh = h / c_.group();
    float* a = att_[l].data() + size_t(h) * n;
    double m = -INFINITY;
    // a sliding-window layer sees the keys p with pos - p < n_swa (llama.cpp's LLAMA_SWA_TYPE_STANDARD)
    auto seen = [&](uint32_t t) {
      if (swa) return pos_ - t < c_.n_swa;
      return t >= restrict_len_ || visible_[l][kvh][t];
    };
    for (uint32_t t = 0; t < n; ++t) {
      if (!seen(t)) {
        a[t] = -INFINITY;
        continue;
      }
      double s = 0;
      for (uint32_t d = 0; d < HD; ++d) s += double(q[h * HD + d]) * kc_[l][(size_t(t) * c_.n_head_kv + kvh) * HD + d];
      a[t] = float(s * c_.attention_scale());
      m = std::max(m, double(a[t]));
    }
    double sum = 0;
    for (uint32_t t = 0; t < n; ++t) sum += std::exp(double(a[t]) - m);
    for (uint32_t t = 0; t < n; ++t) a[t] = float(std::exp(double(a[t]) - m) / sum);
    for (uint32_t d = 0; d < HD; ++d) {
      double acc = 0;
      for (uint32_t t = 0; t < n; ++t) acc += double(a[t]) * vc_[l][(size_t(t) * c_.n_head_kv + kvh) * HD + d];
      out[h * HD + d] = float(acc);
    }
  }
}

std::vector<float> RefModel::forward(int32_t token) {
  if (pos_ >= n_ctx_) throw Error(ErrorKind::InvalidArgument, "reference model: context full");
  if (token < 0 || uint32_t(token) >= c_.n_vocab)
    throw Error(ErrorKind::InvalidArgument, "reference model: token out of range");
  const uint32_t D = c_.n_embd, HD = c_.head_dim, QD = c_.q_dim(), KVD = c_.kv_dim();
  std::vector<float> x(tok_embd_.begin() + size_t(token) * D, tok_embd_.begin() + size_t(token + 1) * D);
  if (c_.embd_scale > 0)
    for (float& v : x) v *= c_.embd_scale;
  std::vector<float> xn(D), q(QD), k(KVD), v(KVD), att_out(QD), tmp(D), g(c_.n_ff), u(c_.n_ff);
  for (uint32_t l = 0; l < c_.n_layer; ++l) {
    const Layer& L = layers_[l];
    rmsnorm(xn.data(), x.data(), L.attn_norm.data(), D, c_.rms_eps);
    matvec(q.data(), L.wq, xn.data(), QD, D);
    matvec(k.data(), L.wk, xn.data(), KVD, D);
    matvec(v.data(), L.wv, xn.data(), KVD, D);
    if (c_.qkv_bias) {
      for (uint32_t i = 0; i < QD; ++i) q[i] += L.bq[i];
      for (uint32_t i = 0; i < KVD; ++i) k[i] += L.bk[i], v[i] += L.bv[i];
    }
    if (c_.qk_norm) {  // each head normalised on its own
      for (uint32_t h = 0; h < c_.n_head; ++h) rmsnorm(&q[h * HD], &q[h * HD], L.q_norm.data(), HD, c_.rms_eps);
      for (uint32_t h = 0; h < c_.n_head_kv; ++h) rmsnorm(&k[h * HD], &k[h * HD], L.k_norm.data(), HD, c_.rms_eps);
    }
    const bool swa = c_.is_swa(l);
    const float base = swa ? c_.rope_base_swa : c_.rope_base, scale = swa ? 1.0f : c_.rope_freq_scale;
    rope(q.data(), c_.n_head, c_, pos_, rope_freqs_, base, scale);
    rope(k.data(), c_.n_head_kv, c_, pos_, rope_freqs_, base, scale);
    qh_[l].insert(qh_[l].end(), q.begin(), q.end());
    if (kv_f16_)
      for (uint32_t i = 0; i < KVD; ++i)
        k[i] = fp16_to_fp32(fp32_to_fp16(k[i])), v[i] = fp16_to_fp32(fp32_to_fp16(v[i]));
    kc_[l].insert(kc_[l].end(), k.begin(), k.end());
    vc_[l].insert(vc_[l].end(), v.begin(), v.end());
    attention(l, q, att_out);
    matvec(tmp.data(), L.wo, att_out.data(), D, QD);
    if (c_.post_norms) rmsnorm(tmp.data(), tmp.data(), L.post_attn_norm.data(), D, c_.rms_eps);
    for (uint32_t i = 0; i < D; ++i) x[i] += tmp[i];
    rmsnorm(xn.data(), x.data(), L.ffn_norm.data(), D, c_.rms_eps);
    matvec(g.data(), L.w_gate, xn.data(), c_.n_ff, D);
    matvec(u.data(), L.w_up, xn.data(), c_.n_ff, D);
    std::vector<float> act(c_.n_ff);
    if (c_.gelu_ffn)
      ref::geglu(g.data(), u.data(), act.data(), c_.n_ff);
    else
      ref::swiglu(g.data(), u.data(), act.data(), c_.n_ff);
    matvec(tmp.data(), L.w_down, act.data(), D, c_.n_ff);
    if (c_.post_norms) rmsnorm(tmp.data(), tmp.data(), L.post_ffn_norm.data(), D, c_.rms_eps);
    for (uint32_t i = 0; i < D; ++i) x[i] += tmp[i];
  }
  rmsnorm(xn.data(), x.data(), output_norm_.data(), D, c_.rms_eps);
  std::vector<float> logits(c_.n_vocab);
  matvec(logits.data(), output_, xn.data(), c_.n_vocab, D);
  if (c_.logit_softcap > 0) ref::softcap(logits.data(), logits.size(), c_.logit_softcap);
  ++pos_;
  return logits;
}

}  // namespace snapvk
