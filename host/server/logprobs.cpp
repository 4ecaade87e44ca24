#include "host/server/logprobs.h"

#include <algorithm>
#include <cmath>

#include "host/model/tokenizer.h"
#include "host/session/sampler.h"

namespace snapvk::server {

TokenLogprob token_logprob(const Tokenizer& tok, std::span<const float> logits, int32_t token, uint32_t n_top) {
  const double lse = log_sum_exp(logits);
  TokenLogprob out;
  out.token = token;
  out.piece = tok.token_to_piece(token);
  out.logprob = float(double(logits[size_t(token)]) - lse);
  n_top = uint32_t(std::min<size_t>(n_top, logits.size()));
  if (n_top == 0) return out;
  // The n_top best in one pass over the vocabulary, kept in a heap whose top is the worst of them
  // (no vocabulary-sized scratch per token).
  auto better = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  std::vector<int32_t> best;
  best.reserve(n_top + 1);
  for (int32_t id = 0; id < int32_t(logits.size()); ++id) {
    if (best.size() == n_top && !better(id, best.front())) continue;
    best.push_back(id);
    std::push_heap(best.begin(), best.end(), better);
    if (best.size() > n_top) {
      std::pop_heap(best.begin(), best.end(), better);
      best.pop_back();
    }
  }
  std::sort_heap(best.begin(), best.end(), better);
  for (int32_t id : best) out.top.push_back({id, tok.token_to_piece(id), float(double(logits[size_t(id)]) - lse)});
  return out;
}

}  // namespace snapvk::server
