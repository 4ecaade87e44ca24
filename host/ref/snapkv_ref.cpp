#include "host/ref/snapkv_ref.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace snapvk::ref {

std::vector<double> window_votes(const std::vector<float>& q, const std::vector<float>& k, uint32_t L, uint32_t n_q,
                                 uint32_t P, uint32_t n_head, uint32_t n_kv, uint32_t hd, GqaAgg agg) {
  const uint32_t G = n_head / n_kv;
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> votes(size_t(n_kv) * P, 0.0);
  std::vector<double> row(L);
  for (uint32_t h = 0; h < n_head; ++h) {
    const uint32_t kvh = h / G;
    std::vector<double> head_votes(P, 0.0);
    for (uint32_t i = 0; i < n_q; ++i) {
      const uint32_t visible = L - n_q + i + 1;  // causal inside the window
      double m = -INFINITY;
      for (uint32_t j = 0; j < visible; ++j) {
        double s = 0;
        for (uint32_t d = 0; d < hd; ++d)
          s += double(q[(size_t(i) * n_head + h) * hd + d]) * k[(size_t(kvh) * L + j) * hd + d];
        row[j] = s * scale;
        m = std::max(m, row[j]);
      }
      double sum = 0;
      for (uint32_t j = 0; j < visible; ++j) sum += std::exp(row[j] - m);
      for (uint32_t j = 0; j < std::min(P, visible); ++j) head_votes[j] += std::exp(row[j] - m) / sum;
    }
    for (uint32_t j = 0; j < P; ++j) {
      double& v = votes[size_t(kvh) * P + j];
      v = agg == GqaAgg::Max ? std::max(v, head_votes[j]) : v + head_votes[j];
    }
  }
  if (agg == GqaAgg::Mean)
    for (auto& v : votes) v /= G;
  return votes;
}

std::vector<double> pool1d(const std::vector<double>& v, uint32_t P, uint32_t n_kv, uint32_t kernel, bool avg,
                           uint32_t ahead) {
  std::vector<double> out(v.size());
  const int half = int(kernel / 2);
  for (uint32_t h = 0; h < n_kv; ++h)
    for (int j = 0; j < int(P); ++j) {
      double acc = avg ? 0.0 : -INFINITY;
      for (int t = j - half - int(ahead); t <= j + half; ++t) {
        if (t < 0 || t >= int(P)) continue;  // padding: zero for avg (still divided by k), ignored by max
        const double x = v[size_t(h) * P + t];
        acc = avg ? acc + x : std::max(acc, x);
      }
      out[size_t(h) * P + j] = avg ? acc / (kernel + ahead) : acc;
    }
  return out;
}

std::vector<double> complete_words(const std::vector<double>& s, uint32_t P, uint32_t n_kv,
                                   const std::vector<uint32_t>& words, uint32_t reach) {
  std::vector<double> out(s.size());
  for (uint32_t h = 0; h < n_kv; ++h)
    for (uint32_t j = 0; j < P; ++j) {
      const double* row = s.data() + size_t(h) * P;
      uint32_t first = j, last = j;  // the word around j, at most `reach` either way
      while (j - first < reach && first > 0 && words[first]) --first;
      while (last - j < reach && last + 1 < P && words[last + 1]) ++last;
      out[size_t(h) * P + j] = *std::max_element(row + first, row + last + 1);
    }
  return out;
}

std::vector<uint32_t> topk(const double* scores, uint32_t n, uint32_t count) {
  std::vector<uint32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0u);
  count = std::min(count, n);
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return scores[a] > scores[b]; });
  idx.resize(count);
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<std::vector<uint32_t>> select_layer(const KvPolicyOptions& pol, uint32_t layer, uint32_t n_layer,
                                                const std::vector<float>& q, const std::vector<float>& k, uint32_t L,
                                                uint32_t n_head, uint32_t n_kv, uint32_t hd,
                                                std::vector<double>* scores_out,
                                                const std::vector<uint32_t>* words) {
  const uint32_t C = pol.layer_budgets(L, n_layer)[layer];
  std::vector<std::vector<uint32_t>> keep(n_kv);
  if (L <= C) {
    for (auto& h : keep) h.resize(L), std::iota(h.begin(), h.end(), 0u);
    return keep;
  }
  const uint32_t W = std::min(pol.window, L), P = L - W, count = C - W;
  std::vector<double> scores;
  if (pol.policy == KvPolicy::StreamingLLM) {
    const uint32_t sinks = std::min(pol.sinks, count);
    for (auto& h : keep) {
      for (uint32_t i = 0; i < sinks; ++i) h.push_back(i);
      for (uint32_t p = P - (count - sinks); p < P; ++p) h.push_back(p);
    }
  } else {
    const uint32_t n_q = pol.policy == KvPolicy::H2O ? L : W;
    const std::vector<float> qv(q.end() - ptrdiff_t(size_t(n_q) * n_head * hd), q.end());
    scores = window_votes(qv, k, L, n_q, P, n_head, n_kv, hd, pol.gqa);
    if (pol.pools()) scores = pool1d(scores, P, n_kv, pol.kernel, pol.pool == KvPool::Avg, pol.pool_ahead);
    if (pol.completes_words() && words) scores = complete_words(scores, P, n_kv, *words, pol.complete_words);
    if (pol.policy != KvPolicy::AdaKV) {
      for (uint32_t h = 0; h < n_kv; ++h) keep[h] = topk(scores.data() + size_t(h) * P, P, count);
    } else {
      const uint32_t floor_count = std::min<uint32_t>(uint32_t(pol.adakv_floor * count), count);
      for (uint32_t h = 0; h < n_kv; ++h)
        for (uint32_t j : topk(scores.data() + size_t(h) * P, P, floor_count)) scores[size_t(h) * P + j] = INFINITY;
      for (uint32_t i : topk(scores.data(), n_kv * P, n_kv * count)) keep[i / P].push_back(i % P);
    }
  }
  for (auto& h : keep)
    for (uint32_t p = P; p < L; ++p) h.push_back(p);
  if (scores_out) *scores_out = std::move(scores);
  return keep;
}

}  // namespace snapvk::ref
