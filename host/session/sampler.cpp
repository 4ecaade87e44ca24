#include "host/session/sampler.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace snapvk {

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = int32_t(i);
  return best;
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {
  if (std::isnan(p.temp) || std::isnan(p.top_p) || std::isnan(p.min_p) || std::isnan(p.repeat_penalty))
    throw Error(ErrorKind::InvalidArgument, "sampling parameters must be numbers");
  if (p.temp < 0) throw Error(ErrorKind::InvalidArgument, "temperature must be >= 0");
  if (p.top_p <= 0) throw Error(ErrorKind::InvalidArgument, "top-p must be > 0");
  if (p.repeat_penalty <= 0) throw Error(ErrorKind::InvalidArgument, "repeat penalty must be > 0");
}

void Sampler::accept(int32_t token) {
  if (p_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (recent_.size() > size_t(p_.repeat_last_n)) recent_.pop_front();
}

int32_t Sampler::sample(std::span<const float> logits) {
  cand_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand_[i] = {logits[i], int32_t(i)};
  // Repetition penalty (CTRL-style, as llama.cpp): shrink positive logits, grow negative ones.
  if (p_.repeat_penalty != 1.0f) {
    std::vector<int32_t> seen(recent_.begin(), recent_.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen) {
      if (t < 0 || size_t(t) >= cand_.size()) continue;
      float& l = cand_[t].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (p_.temp <= 0) return std::min_element(cand_.begin(), cand_.end(), by_logit)->second;

  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax over the survivors (at temperature 1, as llama.cpp's top-p/min-p see them).
  std::vector<double> prob(n);
  const double m = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(double(cand_[i].first) - m);
  if (p_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i] / sum;
      if (cum >= p_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (p_.min_p > 0) {
    const double cut = p_.min_p * prob[0];
    size_t keep = 1;
    while (keep < n && prob[keep] >= cut) ++keep;
    n = keep;
  }
  // Temperature, then a draw from what is left.
  std::vector<double> w(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += w[i] = std::exp((double(cand_[i].first) - m) / p_.temp);
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= w[i];
    if (r <= 0) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

double log_sum_exp(std::span<const float> logits) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - mx);
  return mx + std::log(sum);
}

void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  const double lse = log_sum_exp(logits);
  out.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = double(logits[i]) - lse;
}

}  // namespace snapvk
