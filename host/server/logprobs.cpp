#include "host/server/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "host/model/tokenizer.h"

namespace snapvk::server {

TokenLogprob token_logprob(const Tokenizer& tok, std::span<const float> logits, int32_t token, uint32_t n_top) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.piece = tok.token_to_piece(token);
  out.logprob = float(double(logits[size_t(token)]) - lse);
  n_top = uint32_t(std::min<size_t>(n_top, logits.size()));
  if (n_top == 0) return out;
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + n_top, ids.end(), [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  });
  for (uint32_t i = 0; i < n_top; ++i)
    out.top.push_back({ids[i], tok.token_to_piece(ids[i]), float(double(logits[size_t(ids[i])]) - lse)});
  return out;
}

}  // namespace snapvk::server
